package tracer

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/tracer/netns/netnstest"
	"golang.org/x/sys/unix"
)

// TestNetstatInNetNS makes accept-queue overflows only inside a network
// namespace the test makes and reads the TcpExt counters as the tracer does
// with Config.NetNSPath: the made namespace's ListenOverflows rise by the
// overflows made, the test's own (read from /proc/net) do not move.
func TestNetstatInNetNS(t *testing.T) {
	ns := netnstest.Make(t)
	inside := &Tracer{netnsPath: ns.Path}
	read := func(what string, f func() (netstat, error)) uint64 {
		t.Helper()
		v, err := f()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v[0] // ListenOverflows
	}
	own := func() (netstat, error) { return readNetstatFile("/proc/net/netstat") }
	ownBefore, before := read("own counters", own), read("counters inside", inside.readNetstat)

	const overflows = 3
	var mainView uint64
	err := ns.Do(func() error {
		// A listener with backlog 0 queues one connection and never
		// accepts: every later SYN overflows its accept queue.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(fd, 0); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
		first, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("first connection: %w", err)
		}
		defer first.Close()
		time.Sleep(50 * time.Millisecond) // the server queues it after the client returns
		for i := 0; i < overflows; i++ {
			// The SYN is dropped: the dial gives up before the 1 s retry.
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				c.Close()
			}
		}
		// /proc/net is /proc/self/net: the main thread's namespace, not
		// this thread's.
		mainView = read("/proc/net inside", own)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if mainView != ownBefore {
		t.Errorf("/proc/net/netstat read inside: ListenOverflows %d, want the main thread's %d", mainView, ownBefore)
	}
	if after := read("counters inside", inside.readNetstat); after-before < overflows {
		t.Errorf("ListenOverflows inside %s: %d -> %d, want at least +%d", ns.Path, before, after, overflows)
	}
	if ownAfter := read("own counters", own); ownAfter != ownBefore {
		t.Errorf("ListenOverflows of the test's own namespace: %d -> %d, want no change", ownBefore, ownAfter)
	}
	if _, err := (&Tracer{netnsPath: "/nonexistent/ns"}).readNetstat(); err == nil {
		t.Error("counters of a missing namespace file: no error")
	}
}
