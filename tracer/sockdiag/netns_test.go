package sockdiag

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/tracer/netns"
	"github.com/acceptwatch/acceptwatch/tracer/netns/netnstest"
)

// serve listens on addr and connects n clients to it, all kept open until
// the test ends.
func serve(t *testing.T, addr string, n int) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestSnapshotInNetNS: the same port listened on in the test's namespace
// (1 connection) and in one it makes (3): OpenIn the made namespace counts
// only its 3, Open only the test's 1.
func TestSnapshotInNetNS(t *testing.T) {
	ns := netnstest.Make(t)
	port := serve(t, "127.0.0.1:0", 1)
	if err := ns.Do(func() error {
		serve(t, "127.0.0.1:"+strconv.Itoa(int(port)), 3)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the accepts
	for _, c := range []struct {
		path string
		open uint32
	}{{ns.Path, 3}, {"", 1}} {
		d, err := OpenIn(c.path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := d.Snapshot(Filter{Ports: []uint16{port}})
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if s.States.Open() != c.open || len(s.Ports) != 1 || len(s.Ports[0].Listeners) != 1 {
			t.Errorf("OpenIn(%q) port %d: %d open, ports %+v; want %d open, one listener", c.path, port, s.States.Open(), s.Ports, c.open)
		}
		if want, _ := netns.Current(); c.path != "" && s.NetNS != uint64(ns.Inode) || c.path == "" && s.NetNS != uint64(want) {
			t.Errorf("OpenIn(%q): snapshot of netns %d", c.path, s.NetNS)
		}
	}
}
