package tracer

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err = inNetNS(t.netnsPath, func() (netstat, error) {
			// /proc/net is the main thread's namespace: this thread's.
			return readNetstatFile("/proc/thread-self/net/netstat")
		})
	}()
	<-done
	return out, err
}

// inNetNS runs fn on this goroutine's thread moved into the network
// namespace at path, then moves it back. A thread that cannot go back stays
// locked: Go ends it with the goroutine instead of reusing it.
func inNetNS(path string, fn func() (netstat, error)) (netstat, error) {
	var out netstat
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return out, fmt.Errorf("reading kernel counters: %w", err)
	}
	defer self.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return out, fmt.Errorf("reading kernel counters of %s: %w", path, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return out, fmt.Errorf("reading kernel counters: entering %s: %w", path, err)
	}
	out, err = fn()
	if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return out, err
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
