package main

import (
	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/tracer/netns"
)

// resolveNetNS turns --netns (/proc/PID/ns/net, /run/netns/NAME, NAME or an
// inode number) into the namespace's inode and a file to enter it by. A bad
// value is a usage error that says what was tried.
func resolveNetNS(spec string) (uint32, string, error) {
	ns, err := netns.Resolve(spec)
	if err != nil {
		return 0, "", usagef("--netns %s: %v", spec, err)
	}
	return ns.Inode, ns.Path, nil
}

// netnsLabel labels a namespace on live lines and port rows: "host", its
// /run/netns name, else its inode (netns.Label is cached and looks an
// unknown inode up again at most once a second).
func netnsLabel(ns uint32) string {
	if l := netns.Label(ns); l != "" {
		return report.Sanitize(l)
	}
	return report.NetNSLabel(nil, ns)
}
