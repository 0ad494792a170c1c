package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/tracer/netns"
	"golang.org/x/sys/unix"
)

// testNetNS is a network namespace the test made, named in /run/netns as
// `ip netns add` names them, with lo up. Do runs code on a thread inside it:
// sockets made there stay in it.
type testNetNS struct {
	name string
	ino  uint32
	do   chan func()
}

// makeNetNS makes a named network namespace (unique to this test run) that
// is removed when the test ends. It needs no ip(8): the guests of the
// kernel matrix have none.
func makeNetNS(t *testing.T, suffix string) *testNetNS {
	t.Helper()
	requireRoot(t)
	ns := &testNetNS{name: fmt.Sprintf("aw-%d-%s", os.Getpid(), suffix), do: make(chan func())}
	path := filepath.Join(netns.Dir, ns.name)
	ready := make(chan error)
	go func() {
		// This thread enters the namespace and is never unlocked: Go ends
		// it with the goroutine rather than reuse it elsewhere.
		runtime.LockOSThread()
		ready <- ns.enter(path)
		for fn := range ns.do {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		close(ns.do)
		t.Fatalf("making network namespace %s: %v", ns.name, err)
	}
	t.Cleanup(func() {
		close(ns.do)
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
	})
	return ns
}

// enter unshares the thread's network namespace, sets lo up and bind-mounts
// the namespace at path.
func (ns *testNetNS) enter(path string) error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := os.MkdirAll(netns.Dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("bind mount: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return err
	}
	ns.ino = uint32(st.Ino)
	return nil
}

// Do runs fn inside the namespace and waits for it.
func (ns *testNetNS) Do(fn func()) {
	done := make(chan struct{})
	ns.do <- func() { defer close(done); fn() }
	<-done
}

func currentNetNS(t *testing.T) uint32 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// TestNetNS: the same port listened on in the test's namespace and in two
// namespaces it makes, connections inside each (the same client address in
// two of them): every count is kept per namespace, and --netns counts one
// namespace only.
func TestNetNS(t *testing.T) {
	requireRoot(t)
	a, b := makeNetNS(t, "a"), makeNetNS(t, "b")
	here := listenAt(t, "[::]:0")
	port := here.port
	var inA, inB *server
	a.Do(func() { inA = listenAt(t, "[::]:"+strconv.Itoa(port)) })
	b.Do(func() { inB = listenAt(t, "[::]:"+strconv.Itoa(port)) })
	hostNS := currentNetNS(t)
	traffic := func() {
		dial(t, "127.0.0.2", "127.0.0.1", port, 2)
		a.Do(func() { dial(t, "127.0.0.3", "127.0.0.1", port, 3) })
		b.Do(func() { dial(t, "127.0.0.2", "127.0.0.1", port, 4) }) // the same client as here's
	}
	type row struct {
		ns   uint32
		addr string
	}

	t.Run("all", func(t *testing.T) {
		p := start(t, "-port", strconv.Itoa(port), "-o", "json")
		traffic()
		here.waitAccepted(t, 2)
		inA.waitAccepted(t, 3)
		inB.waitAccepted(t, 4)
		p.stop(os.Interrupt)
		events, sums := parseJSON(t, p.stdout.String())
		s := finalSummary(t, sums)
		want := map[row]uint64{{hostNS, "127.0.0.2"}: 2, {a.ino, "127.0.0.3"}: 3, {b.ino, "127.0.0.2"}: 4}
		got := map[row]uint64{}
		for _, r := range s.Addresses {
			got[row{r.NetNS, r.Addr}] = r.Accepted
			if r.Handshakes != r.Accepted {
				t.Errorf("%d/%s: %d handshakes, %d accepts", r.NetNS, r.Addr, r.Handshakes, r.Accepted)
			}
			if r.Syns != nil && *r.Syns != r.Accepted {
				t.Errorf("%d/%s: %d SYNs, want %d: SYNs attributed to the wrong namespace", r.NetNS, r.Addr, *r.Syns, r.Accepted)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("accepts per (namespace, address) = %v, want %v", got, want)
		}
		ports := map[uint32]uint64{}
		for _, l := range s.Listeners {
			if l.Port != port {
				t.Errorf("listener row of port %d", l.Port)
			}
			ports[l.NetNS] += l.Accepted
		}
		if w := map[uint32]uint64{hostNS: 2, a.ino: 3, b.ino: 4}; fmt.Sprint(ports) != fmt.Sprint(w) {
			t.Errorf("port %d's accepts per namespace = %v, want %v", port, ports, w)
		}
		evs := map[row]uint64{}
		for _, e := range events {
			evs[row{e.NetNS, e.RemoteAddr}]++
			if e.CgroupID == 0 {
				t.Errorf("accept event without the acceptor's cgroup id: %+v", e)
			}
		}
		if fmt.Sprint(evs) != fmt.Sprint(want) {
			t.Errorf("live events per (namespace, address) = %v, want %v", evs, want)
		}
	})

	// --netns by name, with the live column asked for: one namespace only,
	// its TcpExt counters and connections read inside it (entering it).
	// Accept queues overflow in both made namespaces.
	t.Run("filter", func(t *testing.T) {
		// The made namespaces hold nothing else: any port is free there.
		const full = 4242
		p := start(t, "-port", strconv.Itoa(port)+","+strconv.Itoa(full), "--netns", b.name, "--netns-column")
		traffic()
		inB.waitAccepted(t, 8)
		for _, ns := range []*testNetNS{a, b} {
			ns.Do(func() { overflow(t, full) })
		}
		time.Sleep(300 * time.Millisecond)
		p.stop(os.Interrupt)
		out := p.stdout.String()
		lines := strings.Split(out, "\n")
		if !strings.HasSuffix(lines[0], "NETNS") {
			t.Errorf("live header without the NETNS column asked for: %q", lines[0])
		}
		live := 0
		for _, l := range lines[1:] {
			if l == "" {
				break
			}
			live++
			// TIME PID COMM IP LADDR LPORT RADDR RPORT WAIT BL NETNS
			f := strings.Fields(l)
			if len(f) != 11 || f[6] != "127.0.0.2" || f[5] != strconv.Itoa(port) || f[10] != b.name {
				t.Errorf("live line not of namespace %s's client: %q", b.name, l)
			}
		}
		if live != 4 {
			t.Errorf("%d live lines, want namespace %s's 4:\n%s", live, b.name, out)
		}
		// One namespace: the summary has no NETNS column, one address.
		if !strings.Contains(out, "\n127.0.0.2         4 ") || strings.Contains(out, "127.0.0.3") || strings.Contains(out, "NETNS  ") {
			t.Errorf("summary is not namespace %s's alone:\n%s", b.name, out)
		}
		// Labelled as the other rows are: the namespace's /run/netns name.
		if !strings.Contains(out, "), netns "+b.name+"\n") {
			t.Errorf("connections now not read in namespace %s (%d):\n%s", b.name, b.ino, out)
		}
		// ListenOverflows of b only, and (where drops are attributed) as
		// many drops on b's port 4242.
		m := regexp.MustCompile(`kernel counters \(netns ` + b.name + `\): ListenOverflows \+(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no ListenOverflows of namespace %s:\n%s", b.name, out)
		}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) > 4 && f[0] == strconv.Itoa(full) && strings.Contains(out, " DROPS ") && f[3] != m[1] {
				t.Errorf("port %d: %s drops, the kernel counted %s overflows in %s: %q", full, f[3], m[1], b.name, l)
			}
		}
	})
}

// overflow fills an accept queue on port (a listener of backlog 1 on
// 127.0.0.1 that never accepts) and sends it more SYNs, in the calling
// thread's namespace.
func overflow(t *testing.T, port int) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	synsTo(t, port, 6)
}

// synsTo starts n connections to 127.0.0.1:port without waiting for them
// (closed at the end of the test).
func synsTo(t *testing.T, port, n int) {
	for i := 0; i < n; i++ {
		c, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(c) })
		if err := syscall.Connect(c, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil && err != syscall.EINPROGRESS {
			t.Fatal(err)
		}
	}
}
