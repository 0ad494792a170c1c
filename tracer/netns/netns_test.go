package netns_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/tracer/netns"
	"github.com/acceptwatch/acceptwatch/tracer/netns/netnstest"
	"golang.org/x/sys/unix"
)

func TestResolve(t *testing.T) {
	ns := netnstest.Make(t)
	name := filepath.Base(ns.Path)
	self, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	if ns.Inode == 0 || ns.Inode == self {
		t.Fatalf("netns.Resolve(%q) = %+v, want a namespace other than this one (%d)", name, ns, self)
	}
	if ns.Path != filepath.Join(netns.Dir, name) {
		t.Errorf("netns.Resolve(%q).Path = %q, want %s/%s", name, ns.Path, netns.Dir, name)
	}
	for _, spec := range []string{filepath.Join(netns.Dir, name), strconv.FormatUint(uint64(ns.Inode), 10)} {
		got, err := netns.Resolve(spec)
		if err != nil || got != ns {
			t.Errorf("netns.Resolve(%q) = %+v, %v; want %+v", spec, got, err, ns)
		}
	}
	if got, err := netns.Resolve("/proc/self/ns/net"); err != nil || got.Inode != self {
		t.Errorf("netns.Resolve(/proc/self/ns/net) = %+v, %v; want inode %d", got, err, self)
	}

	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ spec, want string }{
		{"", "empty network namespace"},
		{"aw-nsread-no-such", "/run/netns/aw-nsread-no-such: no such namespace file"},
		{"/nonexistent/ns", "/nonexistent/ns: no such namespace file"},
		{plain, plain + " is not a namespace file"},
		{"/proc/self/ns/uts", "/proc/self/ns/uts is not a network namespace but a uts one"},
		{"1", "no network namespace with inode 1 in /run/netns/* or /proc/*/ns/net"},
	} {
		_, err := netns.Resolve(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("netns.Resolve(%q) error = %v, want one line with %q", c.spec, err, c.want)
		}
	}
}

func TestNames(t *testing.T) {
	ns := netnstest.Make(t)
	netns.ForgetNames() // a scan that sees the namespace just made
	got := netns.Names()
	if got[ns.Inode] != filepath.Base(ns.Path) {
		t.Errorf("netns.Names()[%d] = %q, want %q", ns.Inode, got[ns.Inode], filepath.Base(ns.Path))
	}
	var init unix.Stat_t
	if err := unix.Stat("/proc/1/ns/net", &init); err != nil {
		// PID 1 is out of reach (as in this sandbox): the fallback.
		if err := unix.Stat("/proc/self/ns/net", &init); err != nil {
			t.Fatal(err)
		}
	}
	if got[uint32(init.Ino)] != "host" {
		t.Errorf("netns.Names()[init's %d] = %q, want host", init.Ino, got[uint32(init.Ino)])
	}
	if l := netns.Label(ns.Inode); l != filepath.Base(ns.Path) {
		t.Errorf("netns.Label(%d) = %q, want %q", ns.Inode, l, filepath.Base(ns.Path))
	}
	if l := netns.Label(1); l != "" {
		t.Errorf("netns.Label(1) = %q, want \"\"", l)
	}
}

// TestDo checks that fn runs in the namespace, that the error comes back,
// and that no thread is left behind in it: afterwards every thread of a
// crowd of locked goroutines is in the test's own namespace.
func TestDo(t *testing.T) {
	ns := netnstest.Make(t)
	self, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		var in uint32
		want := fmt.Errorf("fn's error %d", i)
		err := ns.Do(func() error {
			in, err = netns.Current()
			if err != nil {
				return err
			}
			return want
		})
		if err != want {
			t.Fatalf("Do returned %v, want fn's error %v", err, want)
		}
		if in != ns.Inode {
			t.Fatalf("inside Do: namespace %d, want %d", in, ns.Inode)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong := map[uint32]int{}
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if cur, _ := netns.Current(); cur != self {
				mu.Lock()
				wrong[cur]++
				mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond) // hold the thread: others get other threads
		}()
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Errorf("threads left in other namespaces after Do: %v (want all in %d)", wrong, self)
	}
	if err := (netns.NS{Path: "/nonexistent/ns"}).Do(func() error { t.Error("fn ran"); return nil }); err == nil {
		t.Error("Do with a missing namespace file: no error")
	}
}
