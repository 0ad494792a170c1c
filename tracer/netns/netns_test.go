package netns

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// makeNS makes a named network namespace with lo up, deleted when the test
// ends (also when it fails).
func makeNS(t *testing.T) NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making network namespaces needs root (ip netns add)")
	}
	name := fmt.Sprintf("aw-nsread-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	ns, err := Resolve(name)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestResolve(t *testing.T) {
	ns := makeNS(t)
	name := filepath.Base(ns.Path)
	self, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if ns.Inode == 0 || ns.Inode == self {
		t.Fatalf("Resolve(%q) = %+v, want a namespace other than this one (%d)", name, ns, self)
	}
	if ns.Path != filepath.Join(Dir, name) {
		t.Errorf("Resolve(%q).Path = %q, want %s/%s", name, ns.Path, Dir, name)
	}
	for _, spec := range []string{filepath.Join(Dir, name), strconv.FormatUint(uint64(ns.Inode), 10)} {
		got, err := Resolve(spec)
		if err != nil || got != ns {
			t.Errorf("Resolve(%q) = %+v, %v; want %+v", spec, got, err, ns)
		}
	}
	if got, err := Resolve("/proc/self/ns/net"); err != nil || got.Inode != self {
		t.Errorf("Resolve(/proc/self/ns/net) = %+v, %v; want inode %d", got, err, self)
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
		{"/proc/self/ns/uts", "/proc/self/ns/uts is not a network namespace (uts:["},
		{"1", "no network namespace with inode 1 in /run/netns/* or /proc/*/ns/net"},
	} {
		_, err := Resolve(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Resolve(%q) error = %v, want one line with %q", c.spec, err, c.want)
		}
	}
}

func TestNames(t *testing.T) {
	ns := makeNS(t)
	names.Lock()
	names.m = nil // a scan that sees the namespace just made
	names.Unlock()
	got := Names()
	if got[ns.Inode] != filepath.Base(ns.Path) {
		t.Errorf("Names()[%d] = %q, want %q", ns.Inode, got[ns.Inode], filepath.Base(ns.Path))
	}
	var init unix.Stat_t
	if err := unix.Stat("/proc/1/ns/net", &init); err != nil {
		// PID 1 is out of reach (as in this sandbox): the fallback.
		if err := unix.Stat("/proc/self/ns/net", &init); err != nil {
			t.Fatal(err)
		}
	}
	if got[uint32(init.Ino)] != "host" {
		t.Errorf("Names()[init's %d] = %q, want host", init.Ino, got[uint32(init.Ino)])
	}
	if l := Label(ns.Inode); l != filepath.Base(ns.Path) {
		t.Errorf("Label(%d) = %q, want %q", ns.Inode, l, filepath.Base(ns.Path))
	}
	if l := Label(1); l != "" {
		t.Errorf("Label(1) = %q, want \"\"", l)
	}
}

// TestDo checks that fn runs in the namespace, that the error comes back,
// and that no thread is left behind in it: afterwards every thread of a
// crowd of locked goroutines is in the test's own namespace.
func TestDo(t *testing.T) {
	ns := makeNS(t)
	self, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		var in uint32
		want := fmt.Errorf("fn's error %d", i)
		err := ns.Do(func() error {
			in, err = Current()
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
			if cur, _ := Current(); cur != self {
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
	if err := (NS{Path: "/nonexistent/ns"}).Do(func() error { t.Error("fn ran"); return nil }); err == nil {
		t.Error("Do with a missing namespace file: no error")
	}
}

// TestCountersInside makes accept-queue overflows only inside a made
// namespace and reads TcpExt ListenOverflows there (in Do, from
// /proc/thread-self/net/netstat) and in the test's own namespace: only the
// made one's rises, and /proc/net inside Do still shows the main thread's.
func TestCountersInside(t *testing.T) {
	ns := makeNS(t)
	const overflows = 3
	var before, after, mainView uint64
	ownBefore := listenOverflows(t, "/proc/thread-self/net/netstat")
	err := ns.Do(func() error {
		var err error
		if before, err = readListenOverflows("/proc/thread-self/net/netstat"); err != nil {
			return err
		}
		// A listener with backlog 0 takes one connection into its accept
		// queue and never accepts: every later SYN overflows it.
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
		// The client side of a 3-way handshake finishes before the
		// server's queue is checked: wait until the first one is queued.
		time.Sleep(50 * time.Millisecond)
		for i := 0; i < overflows; i++ {
			// Dropped SYNs: the dial times out before the 1 s retry.
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				c.Close()
			}
		}
		if after, err = readListenOverflows("/proc/thread-self/net/netstat"); err != nil {
			return err
		}
		mainView, err = readListenOverflows("/proc/net/netstat")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if after-before < overflows {
		t.Errorf("ListenOverflows inside %s: %d -> %d, want at least +%d", ns.Path, before, after, overflows)
	}
	if own := listenOverflows(t, "/proc/thread-self/net/netstat"); own != ownBefore {
		t.Errorf("ListenOverflows of the test's own namespace moved: %d -> %d, want no change", ownBefore, own)
	}
	if mainView != ownBefore {
		t.Errorf("/proc/net/netstat inside Do = %d, want the main thread's %d (it is /proc/self/net)", mainView, ownBefore)
	}
}

func listenOverflows(t *testing.T, path string) uint64 {
	t.Helper()
	v, err := readListenOverflows(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readListenOverflows reads one TcpExt counter (the tracer's own reader is
// in package tracer, which imports this one).
func readListenOverflows(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == "ListenOverflows" && i < len(fields) {
				return strconv.ParseUint(fields[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no TcpExt ListenOverflows", path)
}
