package tracer

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/tracer/netns/netnstest"
	"golang.org/x/sys/unix"
)

// TestNetstatInNetNS makes accept-queue overflows only inside one of two
// network namespaces the test makes and reads the TcpExt counters as the
// tracer does with Config.NetNSPath: that namespace's ListenOverflows rise
// by the overflows made, the other's do not move. (Not the test's own
// namespace: other test packages run in it at the same time.)
func TestNetstatInNetNS(t *testing.T) {
	ns, other := netnstest.Make(t), netnstest.Make(t)
	inside, outside := &Tracer{netnsPath: ns.Path}, &Tracer{netnsPath: other.Path}
	read := func(what string, f func() (netstat, error)) uint64 {
		t.Helper()
		v, err := f()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v[0] // ListenOverflows
	}
	otherBefore, before := read("counters of the other", outside.readNetstat), read("counters inside", inside.readNetstat)

	const overflows = 3
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
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := read("counters inside", inside.readNetstat); after-before < overflows {
		t.Errorf("ListenOverflows inside %s: %d -> %d, want at least +%d", ns.Path, before, after, overflows)
	}
	if otherAfter := read("counters of the other", outside.readNetstat); otherAfter != otherBefore {
		t.Errorf("ListenOverflows of %s: %d -> %d, want no change", other.Path, otherBefore, otherAfter)
	}
	if _, err := (&Tracer{netnsPath: "/nonexistent/ns"}).readNetstat(); err == nil {
		t.Error("counters of a missing namespace file: no error")
	}
}
