// Package netns names network namespaces and runs code inside one.
//
// It uses golang.org/x/sys/unix directly rather than
// github.com/vishvananda/netns: what acceptwatch needs is setns(2) on a
// locked thread and back, an ioctl to check a file's namespace type, and a
// scan of /run/netns and /proc/*/ns/net; the library would add its handle
// type and still leave the thread-locking and the inode lookup to us.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is where `ip netns add` keeps named namespaces.
const Dir = "/run/netns"

// nsGetNSType is NS_GET_NSTYPE (_IO(0xb7, 0x3), Linux 4.11): the
// CLONE_NEW* type of the namespace an nsfs file refers to.
const nsGetNSType = 0xb703

// nsTypes names the other namespace types for errors.
var nsTypes = map[int]string{
	unix.CLONE_NEWNS: " mount", unix.CLONE_NEWUTS: " uts", unix.CLONE_NEWIPC: "n ipc",
	unix.CLONE_NEWUSER: " user", unix.CLONE_NEWPID: " pid", unix.CLONE_NEWCGROUP: " cgroup",
	unix.CLONE_NEWTIME: " time",
}

// NS is one network namespace.
type NS struct {
	Inode uint32 // as in /proc/PID/ns/net and the kernel's ns.inum
	Path  string // an nsfs file to enter it by: what the user gave, or one found for Inode
}

// Resolve turns spec into a namespace: a path to an nsfs file
// (/proc/PID/ns/net, /run/netns/NAME), a bare NAME of /run/netns, or an
// inode number (looked up among /run/netns/* and /proc/*/ns/net). Errors are
// one line and say what was tried.
func Resolve(spec string) (NS, error) {
	if spec == "" {
		return NS{}, errors.New("empty network namespace (want /proc/PID/ns/net, /run/netns/NAME, NAME or an inode number)")
	}
	if n, err := strconv.ParseUint(spec, 10, 32); err == nil {
		p, ok := paths()[uint32(n)]
		if !ok {
			return NS{}, fmt.Errorf("no network namespace with inode %d in %s/* or /proc/*/ns/net", n, Dir)
		}
		return NS{Inode: uint32(n), Path: p}, nil
	}
	path := spec
	if !strings.Contains(spec, "/") {
		path = filepath.Join(Dir, spec)
	}
	ino, err := inode(path)
	if err != nil {
		return NS{}, err
	}
	return NS{Inode: ino, Path: path}, nil
}

// inode checks that path is a network namespace's nsfs file and returns
// the namespace's inode.
func inode(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%s: no such namespace file (want /proc/PID/ns/net, %s/NAME, NAME or an inode number)", path, Dir)
		}
		return 0, fmt.Errorf("opening %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("%s is not a namespace file (want /proc/PID/ns/net or %s/NAME)", path, Dir)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), nsGetNSType)
	if err != nil {
		return 0, fmt.Errorf("%s: reading its namespace type: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		return 0, fmt.Errorf("%s is not a network namespace but a%s one", path, nsTypes[typ])
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return uint32(st.Ino), nil
}

// Current is the inode of the calling thread's network namespace.
func Current() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("reading this thread's network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}

// Do runs fn in ns on a locked OS thread of its own and returns fn's error.
// Inside fn, read per-namespace /proc files under /proc/thread-self/net:
// /proc/net is /proc/self/net, the main thread's, and Go may or may not have
// picked the main thread for fn (the tests saw both). If the thread cannot go back to its
// namespace it stays locked, so Go ends it with its goroutine instead of
// reusing it in the wrong namespace.
func (ns NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- ns.do(fn) }()
	return <-errc
}

func (ns NS) do(fn func() error) error {
	runtime.LockOSThread()
	back, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", ns.Path, err)
	}
	defer back.Close()
	target, err := os.Open(ns.Path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s (needs CAP_SYS_ADMIN): %w", ns.Path, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(back.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the thread dies with this goroutine.
		return errors.Join(fnErr, fmt.Errorf("leaving network namespace %s: %w", ns.Path, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// paths finds a file for every network namespace in use: its /run/netns
// name where it has one, else the first process's /proc/PID/ns/net.
func paths() map[uint32]string {
	out := map[uint32]string{}
	if procs, err := filepath.Glob("/proc/[0-9]*/ns/net"); err == nil {
		for _, p := range procs {
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil {
				continue // the process ended
			}
			if _, seen := out[uint32(st.Ino)]; !seen {
				out[uint32(st.Ino)] = p
			}
		}
	}
	if ents, err := os.ReadDir(Dir); err == nil {
		for _, e := range ents {
			p := filepath.Join(Dir, e.Name())
			var st unix.Stat_t
			if unix.Stat(p, &st) == nil {
				out[uint32(st.Ino)] = p
			}
		}
	}
	return out
}

// names caches Names; rescans happen at most once per refresh.
var names struct {
	sync.Mutex
	m    map[uint32]string
	when time.Time
}

const refresh = time.Second

// Names maps the inodes of the network namespaces in use to a short label:
// "host" for init's (acceptwatch's own where init's cannot be read), the /run/netns name for named ones, "" for the others
// (a process's). It is cached and rescanned at most once a second.
func Names() map[uint32]string {
	names.Lock()
	defer names.Unlock()
	if names.m == nil || time.Since(names.when) >= refresh {
		names.m, names.when = scan(), time.Now()
	}
	out := make(map[uint32]string, len(names.m))
	for k, v := range names.m {
		out[k] = v
	}
	return out
}

// Label is Names()[ino] without copying the map: cheap on a hot path (a
// live line per event); an unknown inode rescans at most once a second.
func Label(ino uint32) string {
	names.Lock()
	defer names.Unlock()
	l, ok := names.m[ino]
	if (!ok || names.m == nil) && time.Since(names.when) >= refresh {
		names.m, names.when = scan(), time.Now()
		l = names.m[ino]
	}
	return l
}

func scan() map[uint32]string {
	m := map[uint32]string{}
	for ino, p := range paths() {
		m[ino] = ""
		if dir, name := filepath.Split(p); filepath.Clean(dir) == Dir {
			m[ino] = name
		}
	}
	// init's namespace; where /proc/1 cannot be read (a container's
	// sandbox, another user namespace), acceptwatch's own (/proc/self: the
	// main thread's).
	var st unix.Stat_t
	if unix.Stat("/proc/1/ns/net", &st) == nil || unix.Stat("/proc/self/ns/net", &st) == nil {
		m[uint32(st.Ino)] = "host"
	}
	return m
}
