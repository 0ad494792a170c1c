package tracer

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/acceptwatch/acceptwatch/tracer/netns"
)

// netstatNames are the TcpExt counters of /proc/net/netstat that tell
// whether listeners kept up: accept-queue overflows and SYN-queue drops.
var netstatNames = []string{
	"ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies",
	"SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed",
}

type netstat [7]uint64

// readNetstat reads the TcpExt counters of the watched network namespace
// (Config.NetNSPath), else of acceptwatch's own.
func (t *Tracer) readNetstat() (netstat, error) {
	if t.netnsPath == "" {
		return readNetstatFile("/proc/net/netstat")
	}
	var out netstat
	var readErr error
	err := netns.NS{Path: t.netnsPath}.Do(func() error {
		// Not /proc/net: that is the main thread's namespace.
		out, readErr = readNetstatFile("/proc/thread-self/net/netstat")
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("reading kernel counters: %w", err)
	}
	return out, readErr
}

// readNetstatFile reads the counters from a netstat file.
func readNetstatFile(path string) (netstat, error) {
	var out netstat
	f, err := os.Open(path)
	if err != nil {
		return out, fmt.Errorf("reading kernel counters: %w", err)
	}
	defer f.Close()
	// Pairs of lines: "TcpExt: Name1 Name2 ..." then "TcpExt: 1 2 ...".
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields[1:]
			continue
		}
		for i, name := range names {
			if i+1 >= len(fields) {
				break
			}
			for j, want := range netstatNames {
				if name == want {
					out[j], _ = strconv.ParseUint(fields[i+1], 10, 64)
				}
			}
		}
		return out, nil
	}
	return out, fmt.Errorf("reading kernel counters: no TcpExt in /proc/net/netstat")
}
