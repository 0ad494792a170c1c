package cgroups

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Target is a cgroup watched with everything below it (--cgroup): the BPF
// filter finds a socket's ancestor at Level and compares its id with ID.
type Target struct {
	ID    uint64
	Level uint32 // depth below the hierarchy's root (the root's is 0)
	Path  string // in the hierarchy, as /proc/PID/cgroup writes it: "/system.slice/nginx.service"
	Dir   string // its directory where the hierarchy is mounted
}

// Contains says whether a cgroup path (Resolver.Path) is the target's or below it.
func (t Target) Contains(path string) bool {
	if path == "" {
		return false
	}
	return t.Path == "/" || path == t.Path || strings.HasPrefix(path, t.Path+"/")
}

// ErrCgroupNS is the error of a process in a cgroup namespace of its own.
var ErrCgroupNS = errors.New("acceptwatch runs in a cgroup namespace of its own, which hides the hierarchy's levels above it: run it in the host's")

// initCgroupNS is the inode of the initial cgroup namespace (the kernel's
// PROC_CGROUP_INIT_INO, fixed).
const initCgroupNS = 0xEFFFFFFB

// ResolveTarget turns a cgroup v2 directory, absolute or relative to the
// mount, into a Target. The level must be the kernel's: counted from the
// hierarchy's real root, which a process sees only from the initial cgroup
// namespace (checked); a mount of a subtree adds the depth of its root.
func ResolveTarget(dir string) (Target, error) {
	mnt, root, err := Find()
	if err != nil {
		return Target{}, err
	}
	if mnt == "" {
		return Target{}, ErrNoV2
	}
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/cgroup", &st) == nil && st.Ino != initCgroupNS {
		return Target{}, ErrCgroupNS
	}
	id, err := Resolve(dir)
	if err != nil {
		return Target{}, err
	}
	p := dir
	if !filepath.IsAbs(p) {
		p = filepath.Join(mnt, p)
	}
	// Symbolic links resolved, so that the path's depth is the cgroup's.
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return Target{}, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	rel, err := filepath.Rel(mnt, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return Target{}, fmt.Errorf("cgroup %s: not below the cgroup v2 mount %s", dir, mnt)
	}
	path := filepath.Join("/", root, rel)
	return Target{ID: id, Level: uint32(depth(path)), Path: path, Dir: p}, nil
}

// depth counts a clean absolute path's components: "/" 0, "/a/b" 2.
func depth(path string) int {
	if path == "/" {
		return 0
	}
	return strings.Count(path, "/")
}
