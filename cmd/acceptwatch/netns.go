package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/acceptwatch/acceptwatch/report"
)

// netnsDir is where `ip netns add` keeps named namespaces.
const netnsDir = "/run/netns"

// resolveNetNS turns --netns (an nsfs path such as /proc/PID/ns/net or
// /run/netns/NAME, a bare NAME of /run/netns, or an inode number) into the
// namespace's inode and a path to enter it by. A bad value is a usage error
// that says what was tried.
func resolveNetNS(spec string) (uint32, string, error) {
	if n, err := strconv.ParseUint(spec, 10, 32); err == nil {
		p, ok := netnsPaths()[uint32(n)]
		if !ok {
			return 0, "", usagef("--netns %s: no network namespace with that inode in %s or /proc/*/ns/net", spec, netnsDir)
		}
		return uint32(n), p, nil
	}
	path := spec
	if !strings.Contains(spec, "/") {
		path = filepath.Join(netnsDir, spec)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, "", usagef("--netns %s: %v", spec, unwrapPath(err))
	}
	// nsfs files are the only ones whose target is a namespace: a plain
	// file's inode would filter everything out.
	if l, err := os.Readlink(path); err == nil && !strings.HasPrefix(l, "net:[") {
		return 0, "", usagef("--netns %s: %s is not a network namespace", spec, l)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err == nil && fs.Type != nsfsMagic && fs.Type != procMagic {
		return 0, "", usagef("--netns %s: not a network namespace file (want /proc/PID/ns/net or %s/NAME)", spec, netnsDir)
	}
	return uint32(st.Ino), path, nil
}

const (
	nsfsMagic = 0x6e736673
	procMagic = 0x9fa0
)

func unwrapPath(err error) string {
	if os.IsNotExist(err) {
		return "no such namespace file"
	}
	return err.Error()
}

// netnsNames labels the network namespaces that have a name: "host" for
// init's, /run/netns names; other live namespaces (of processes) map to "".
func netnsNames() map[uint32]string {
	names := map[uint32]string{}
	for ino, p := range netnsPaths() {
		names[ino] = ""
		if dir, name := filepath.Split(p); filepath.Clean(dir) == netnsDir {
			names[ino] = name
		}
	}
	if host := hostNetNS(); host != 0 {
		names[host] = "host"
	}
	return names
}

// hostNetNS is the inode of init's network namespace, or where that cannot
// be read (a container's PID 1 of another user namespace) acceptwatch's own.
func hostNetNS() uint32 {
	var st syscall.Stat_t
	if syscall.Stat("/proc/1/ns/net", &st) == nil || syscall.Stat("/proc/self/ns/net", &st) == nil {
		return uint32(st.Ino)
	}
	return 0
}

// netnsPaths finds a file for every network namespace in use: its
// /run/netns name where it has one, else a process's /proc/PID/ns/net.
func netnsPaths() map[uint32]string {
	paths := map[uint32]string{}
	ino := func(path string) (uint32, bool) {
		var st syscall.Stat_t
		if syscall.Stat(path, &st) != nil {
			return 0, false
		}
		return uint32(st.Ino), true
	}
	if procs, err := filepath.Glob("/proc/[0-9]*/ns/net"); err == nil {
		for _, p := range procs {
			if n, ok := ino(p); ok {
				if _, seen := paths[n]; !seen {
					paths[n] = p
				}
			}
		}
	}
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			p := filepath.Join(netnsDir, e.Name())
			if n, ok := ino(p); ok {
				paths[n] = p
			}
		}
	}
	return paths
}

// netnsLabeler labels namespaces on live lines, looking names up again
// (at most once a second) when an unnamed one shows up.
func netnsLabeler() func(uint32) string {
	names := netnsNames()
	return func(ns uint32) string {
		if _, ok := names[ns]; !ok {
			names = netnsNames()
			if _, ok := names[ns]; !ok {
				names[ns] = "" // not again for this one
			}
		}
		return report.NetNSLabel(names, ns)
	}
}
