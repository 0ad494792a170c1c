package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoV2 is the error of hosts that mount only cgroup v1 hierarchies.
var ErrNoV2 = errors.New("no cgroup v2 hierarchy mounted (a cgroup v1-only host)")

// Mount is where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or
// /sys/fs/cgroup/unified on hybrid systems.
func Mount() (string, error) {
	mnt, _, err := Find()
	if err != nil {
		return "", err
	}
	if mnt == "" {
		return "", ErrNoV2
	}
	return mnt, nil
}

// Resolve turns a cgroup v2 directory, absolute or relative to the mount,
// into its id: the directory's inode, which is what bpf_get_current_cgroup_id
// returns for tasks in it (kernfs ids are inode numbers on 64-bit kernels).
func Resolve(dir string) (uint64, error) {
	if dir == "" {
		return 0, errors.New("empty cgroup path")
	}
	mnt, err := Mount()
	if err != nil {
		return 0, err
	}
	p := dir
	if !filepath.IsAbs(p) {
		p = filepath.Join(mnt, p)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(p, &sfs); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup %s: not in a cgroup v2 hierarchy (mounted at %s)", dir, mnt)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("cgroup %s: not a directory", dir)
	}
	return st.Ino, nil
}

// Resolver maps cgroup ids to paths. A miss walks the hierarchy again, at
// most once per minWalk: ids of cgroups made since are found on the next
// walk, and an id that is gone costs no walk per event.
type Resolver struct {
	mnt, prefix string
	minWalk     time.Duration

	mu       sync.Mutex
	paths    map[uint64]entry
	lastWalk time.Time
	walks    int
}

// NewResolver is a Resolver of the cgroup v2 hierarchy; ErrNoV2 on hosts
// without one.
func NewResolver() (*Resolver, error) {
	mnt, root, err := Find()
	if err != nil {
		return nil, err
	}
	if mnt == "" {
		return nil, ErrNoV2
	}
	// A mount of a subtree (a cgroup namespace) shows paths below root.
	prefix := strings.TrimSuffix(root, "/")
	return &Resolver{mnt: mnt, prefix: prefix, minWalk: 250 * time.Millisecond}, nil
}

type entry struct {
	path, container string // container: "" until first asked for
	parsed          bool
}

// Path is the cgroup's path in the hierarchy ("/system.slice/nginx.service"),
// "" if the id is 0, unknown or gone.
func (r *Resolver) Path(id uint64) string {
	p, _ := r.Lookup(id)
	return p
}

// Lookup is Path and the label of the container or unit the path names
// (Parse(path).String()), parsed once per cgroup: it runs per live line.
func (r *Resolver) Lookup(id uint64) (path, container string) {
	if r == nil || id == 0 {
		return "", ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.paths[id]
	if !ok {
		if r.paths != nil && time.Since(r.lastWalk) < r.minWalk {
			return "", ""
		}
		r.walk()
		if e, ok = r.paths[id]; !ok {
			return "", ""
		}
	}
	if !e.parsed {
		e.container, e.parsed = Parse(e.path).String(), true
		r.paths[id] = e
	}
	return e.path, e.container
}

// walk rebuilds the whole map, so that it holds only cgroups that exist:
// its size is bounded by the hierarchy's.
func (r *Resolver) walk() {
	paths := make(map[uint64]entry, len(r.paths))
	filepath.WalkDir(r.mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			// A cgroup removed during the walk, or a control file.
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		path := r.prefix + strings.TrimPrefix(p, r.mnt)
		if path == "" {
			path = "/"
		}
		paths[st.Ino] = entry{path: path}
		return nil
	})
	r.paths, r.lastWalk = paths, time.Now()
	r.walks++
}

// Container is what a cgroup path says about who runs in it.
type Container struct {
	Runtime string // docker, containerd, cri-o, podman, lxc; "" if no container
	ID      string // the container's id as its runtime prints it (12 hex for ids of 64)
	Pod     string // a Kubernetes pod's uid, if the container is a pod's
	Unit    string // the innermost systemd service or scope, without a container
}
