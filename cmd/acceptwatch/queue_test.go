package main

// Accept-queue tests: real listeners driven into the situations the summary
// reports (slow accept, never accepted, client gone, overflow), in whatever
// attach mode the run uses.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// rawListener listens on 127.0.0.1 with the given backlog, with a blocking
// descriptor that the test accepts from only when it decides to.
func rawListener(t *testing.T, backlog int) (fd, port int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			syscall.Close(fd)
		}
	})
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, sa.(*syscall.SockaddrInet4).Port
}

// connectN opens n connections from src and keeps them open.
func connectN(t *testing.T, src string, port, n int) []*net.TCPConn {
	t.Helper()
	var conns []*net.TCPConn
	for i := 0; i < n; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("dial %s -> :%d: %v", src, port, err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

func acceptN(t *testing.T, fd, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		nfd, _, err := syscall.Accept(fd)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		syscall.Close(nfd)
	}
}

func parseQueue(t *testing.T, out string) ([]jsonEvent, jsonSummary) {
	t.Helper()
	events, sums := parseJSON(t, out)
	return events, finalSummary(t, sums)
}

// TestQueueWait: connections wait in the queue while the server sleeps; the
// measured wait and backlog must match.
func TestQueueWait(t *testing.T) {
	fd, port := rawListener(t, 64)
	p := start(t, "-port", strconv.Itoa(port), "-o", "json")
	const n = 3
	const sleep = 400 * time.Millisecond
	connectN(t, "127.0.0.7", port, n)
	time.Sleep(sleep)
	acceptN(t, fd, n)
	p.stop(os.Interrupt)

	events, s := parseQueue(t, p.stdout.String())
	if len(events) != n {
		t.Fatalf("%d events, want %d", len(events), n)
	}
	// Generous upper bound: QEMU's software emulation is slow.
	for i, e := range events {
		if e.QueueWaitUs == nil {
			t.Fatalf("event %d has no queue wait: %+v", i, e)
		}
		wait := time.Duration(*e.QueueWaitUs) * time.Microsecond
		if wait < sleep-20*time.Millisecond || wait > sleep+3*time.Second {
			t.Errorf("event %d: queue wait %v, want about %v", i, wait, sleep)
		}
		if e.Backlog == nil || e.BacklogMax == nil {
			t.Fatalf("event %d has no backlog: %+v", i, e)
		}
		// All n were queued; each accept takes one.
		if *e.Backlog != uint32(n-i) || *e.BacklogMax != 64 {
			t.Errorf("event %d: backlog %d/%d, want %d/64", i, *e.Backlog, *e.BacklogMax, n-i)
		}
	}
	if len(s.Listeners) != 1 {
		t.Fatalf("listeners %+v, want one", s.Listeners)
	}
	l := s.Listeners[0]
	if l.Port != port || l.Accepted != n || l.BacklogMax != n || l.BacklogLimit != 64 || l.QueueWait.Count != n {
		t.Errorf("port stats %+v, want port %d, %d accepted, backlog %d/64", l, port, n, n)
	}
	// p99 is a log2 bucket bound capped at the max: within [max/2, max].
	if l.QueueWait.P99 == nil || l.QueueWait.Max == nil || *l.QueueWait.P99 > *l.QueueWait.Max ||
		*l.QueueWait.P99 < *l.QueueWait.Max/2 || time.Duration(*l.QueueWait.Max)*time.Microsecond < sleep-20*time.Millisecond {
		t.Errorf("port queue wait %+v, want p99 and max about %v", l.QueueWait, sleep)
	}
	if !hasFinding(s, "queue wait p99") {
		t.Errorf("no queue-wait finding for a %v wait (threshold 100ms): %q", sleep, s.Findings)
	}
}

// TestQueueWaitPercentiles: a server that sleeps known times before each
// accept. The live events carry each connection's exact wait; the summary's
// percentiles must hold the true ones: per port within 5 %, per address
// within the range printed, and a single wait exactly.
func TestQueueWaitPercentiles(t *testing.T) {
	fd, port := rawListener(t, 64)
	p := start(t, "-port", strconv.Itoa(port), "-o", "json")
	// Ten connections from one address, accepted 15 ms apart: waits of
	// about 15, 30, ... 150 ms.
	connectN(t, "127.0.0.21", port, 10)
	for range 10 {
		time.Sleep(15 * time.Millisecond)
		acceptN(t, fd, 1)
	}
	// One connection that waits 40 ms alone.
	connectN(t, "127.0.0.22", port, 1)
	time.Sleep(40 * time.Millisecond)
	acceptN(t, fd, 1)
	// Five taken at once: waits of microseconds.
	connectN(t, "127.0.0.23", port, 5)
	acceptN(t, fd, 5)
	p.stop(os.Interrupt)

	events, s := parseQueue(t, p.stdout.String())
	waits := map[string][]int64{} // µs, per address and "" for the port
	for _, e := range events {
		if e.QueueWaitUs == nil {
			t.Fatalf("event without a queue wait: %+v", e)
		}
		waits[e.RemoteAddr] = append(waits[e.RemoteAddr], *e.QueueWaitUs)
		waits[""] = append(waits[""], *e.QueueWaitUs)
	}
	if len(waits[""]) != 16 {
		t.Fatalf("%d events, want 16", len(waits[""]))
	}
	// Nearest rank, as acceptwatch defines its percentiles. Event waits are
	// whole µs (truncated), the histograms count nanoseconds: 1 µs slack.
	rank := func(w []int64, q float64) int64 {
		w = slices.Clone(w)
		slices.Sort(w)
		return w[int(math.Ceil(q*float64(len(w))))-1]
	}
	check := func(who string, qw jsonWaits, w []int64, within5 bool) {
		t.Helper()
		if qw.Count != uint64(len(w)) || qw.P50 == nil || qw.P50Range == nil || qw.P99Range == nil || qw.Min == nil || qw.Max == nil {
			t.Errorf("%s: queue_wait %+v for %d waits", who, qw, len(w))
			return
		}
		if *qw.Min > slices.Min(w)+1 || *qw.Min < slices.Min(w) || *qw.Max > slices.Max(w)+1 || *qw.Max < slices.Max(w) {
			t.Errorf("%s: min %d max %d µs, want %d and %d", who, *qw.Min, *qw.Max, slices.Min(w), slices.Max(w))
		}
		for _, c := range []struct {
			q   float64
			est *int64
			rng *[2]int64
		}{{0.5, qw.P50, qw.P50Range}, {0.99, qw.P99, qw.P99Range}} {
			truth := rank(w, c.q)
			if truth < c.rng[0] || truth > c.rng[1]+1 {
				t.Errorf("%s: p%.0f is %d µs, outside the range %v printed", who, c.q*100, truth, *c.rng)
			}
			if *c.est < c.rng[0] || *c.est > c.rng[1] {
				t.Errorf("%s: p%.0f estimate %d µs outside its range %v", who, c.q*100, *c.est, *c.rng)
			}
			if within5 && math.Abs(float64(*c.est-truth)) > 0.05*float64(truth)+1 {
				t.Errorf("%s: p%.0f %d µs, true %d: more than 5 %% off", who, c.q*100, *c.est, truth)
			}
		}
	}
	if len(s.Listeners) != 1 {
		t.Fatalf("listeners %+v", s.Listeners)
	}
	check("port", s.Listeners[0].QueueWait, waits[""], true)
	for _, a := range s.Addresses {
		check(a.Addr, a.QueueWait, waits[a.Addr], false)
		// A single wait is known exactly: the range is that wait.
		if len(waits[a.Addr]) == 1 && a.QueueWait.P50Range != nil &&
			(a.QueueWait.P50Range[1]-a.QueueWait.P50Range[0] > 1 || *a.QueueWait.P50 < waits[a.Addr][0]-1 || *a.QueueWait.P50 > waits[a.Addr][0]+1) {
			t.Errorf("%s: one wait of %d µs shown as %d in %v", a.Addr, waits[a.Addr][0], *a.QueueWait.P50, *a.QueueWait.P50Range)
		}
	}
	if len(s.Addresses) != 3 {
		t.Errorf("%d addresses, want 3", len(s.Addresses))
	}
}

// TestNotAccepted: the listener closes with completed handshakes queued.
func TestNotAccepted(t *testing.T) {
	fd, port := rawListener(t, 64)
	p := start(t, "-port", strconv.Itoa(port), "-o", "json")
	const n = 3
	connectN(t, "127.0.0.8", port, n)
	time.Sleep(100 * time.Millisecond)
	syscall.Close(fd) // the queued connections are never accepted
	time.Sleep(200 * time.Millisecond)
	p.stop(os.Interrupt)

	_, s := parseQueue(t, p.stdout.String())
	if s.TotalAccepted != 0 || s.TotalHandshakes != n || s.TotalNotAccepted != n {
		t.Errorf("accepted %d handshakes %d not_accepted %d, want 0, %d, %d",
			s.TotalAccepted, s.TotalHandshakes, s.TotalNotAccepted, n, n)
	}
	if len(s.Addresses) != 1 || s.Addresses[0].Addr != "127.0.0.8" || s.Addresses[0].NotAccepted != n {
		t.Errorf("addresses %+v, want 127.0.0.8 with %d not accepted", s.Addresses, n)
	}
	if !hasFinding(s, "closed before any accept()") {
		t.Errorf("no never-accepted finding: %q", s.Findings)
	}
}

// TestClientGone: clients reset (or close) while queued, then the server
// accepts them: each accept is flagged.
func TestClientGone(t *testing.T) {
	fd, port := rawListener(t, 64)
	p := start(t, "-port", strconv.Itoa(port), "-o", "json")
	conns := connectN(t, "127.0.0.10", port, 3)
	conns[0].SetLinger(0) // RST
	conns[0].Close()
	conns[1].Close() // FIN: the server side goes CLOSE_WAIT
	time.Sleep(200 * time.Millisecond)
	acceptN(t, fd, 3)
	p.stop(os.Interrupt)

	events, s := parseQueue(t, p.stdout.String())
	gone := 0
	states := map[string]int{}
	for _, e := range events {
		if e.ClientGone {
			gone++
		}
		states[e.State]++
		if e.LocalPort != port {
			t.Errorf("event local port %d, want %d (taken from the listener)", e.LocalPort, port)
		}
	}
	if len(events) != 3 || gone != 2 || s.TotalClientGone != 2 || s.TotalAccepted != 3 {
		t.Errorf("%d events, %d flagged, summary client_gone %d accepted %d; want 3, 2, 2, 3",
			len(events), gone, s.TotalClientGone, s.TotalAccepted)
	}
	// The reset one is CLOSE, the closed one CLOSE_WAIT, the third open.
	if states["CLOSE"] != 1 || states["CLOSE_WAIT"] != 1 || states["ESTABLISHED"] != 1 {
		t.Errorf("states at accept %v, want one each of CLOSE, CLOSE_WAIT, ESTABLISHED", states)
	}
}

// TestBacklogOverflow: a listener with backlog 1 and no accept() is flooded
// until the kernel drops handshakes; then it accepts what was queued.
func TestBacklogOverflow(t *testing.T) {
	fd, port := rawListener(t, 1)
	p := start(t, "-port", strconv.Itoa(port), "-o", "json")
	// Non-blocking connects: the client side completes even when the
	// server drops the final ACK because its queue is full.
	var fds []int
	for i := 0; i < 8; i++ {
		c, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, c)
		err = syscall.Connect(c, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		if err != nil && err != syscall.EINPROGRESS {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, c := range fds {
			syscall.Close(c)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	// backlog 1 holds two connections (the kernel's full test is >).
	acceptN(t, fd, 2)
	p.stop(os.Interrupt)

	_, s := parseQueue(t, p.stdout.String())
	overflows := s.KernelCounters["ListenOverflows"]
	if overflows == 0 {
		t.Errorf("ListenOverflows did not move: %v", s.KernelCounters)
	}
	// Each connection completes before the next SYN (one CPU's backlog
	// queue, in order), so the drops are SYNs that found the queue full:
	// attributed wherever the cgroup counter runs, to 127.0.0.1.
	a, _ := s.addr("127.0.0.1")
	if !hasDropCounter(s, "syn") || a.Drops != overflows || s.TotalDrops == nil || *s.TotalDrops != overflows {
		t.Errorf("drop_counters %v, 127.0.0.1 drops %d, total %v; want syn and all %d overflows", s.DropCounters, a.Drops, s.TotalDrops, overflows)
	}
	if !hasFinding(s, "by address: 127.0.0.1 ") {
		t.Errorf("no finding names the dropped address: %q", s.Findings)
	}
	if len(s.Listeners) != 1 || s.Listeners[0].BacklogMax != 2 || s.Listeners[0].BacklogLimit != 1 {
		t.Errorf("listeners %+v, want backlog max 2 of limit 1", s.Listeners)
	}
	if !hasFinding(s, "overflowed") || !hasFinding(s, "reached its limit") {
		t.Errorf("findings %q lack the overflow", s.Findings)
	}
}

func hasFinding(s jsonSummary, frag string) bool {
	for _, f := range s.Findings {
		if strings.Contains(f, frag) {
			return true
		}
	}
	return false
}

// TestHalfOpen: a client whose SYN-ACKs are dropped (an XDP program on lo
// drops SYN-ACKs to 127.0.0.11) leaves the handshake half-open; the
// listener's SYN-ACK retransmits are counted against that address.
func TestHalfOpen(t *testing.T) {
	requireRoot(t)
	dropSynAcks(t, netip.MustParsePrefix("127.0.0.11/32"))
	ln := listen(t)
	p := start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "--half-open-threshold", "1")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.11")}, Timeout: 2500 * time.Millisecond}
	if c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ln.port))); err == nil {
		c.Close()
		t.Fatal("handshake completed although SYN-ACKs are dropped")
	}
	p.stop(os.Interrupt)

	_, s := parseQueue(t, p.stdout.String())
	if len(s.Addresses) != 1 || s.Addresses[0].Addr != "127.0.0.11" || s.Addresses[0].SynackRetrans == 0 ||
		s.Addresses[0].Handshakes != 0 || s.Addresses[0].Accepted != 0 {
		t.Fatalf("addresses %+v, want 127.0.0.11 with SYN-ACK retransmits only", s.Addresses)
	}
	if !hasFinding(s, "127.0.0.11: ") {
		t.Errorf("no half-open finding for 127.0.0.11: %q", s.Findings)
	}
}

// dropSynAcks attaches to lo an XDP program that drops IPv4 TCP segments
// with SYN and ACK set to addresses in dst, until the test ends or detach is
// called. Kernels that allow only tracepoints refuse it.
func dropSynAcks(t *testing.T, dst netip.Prefix) (detach func()) {
	t.Helper()
	b := dst.Addr().As4()
	mask := net.CIDRMask(dst.Bits(), 32)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 14+20+20),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // ethertype
			asm.JNE.Imm(asm.R5, 0x0008, "pass"),       // htons(ETH_P_IP)
			asm.LoadMem(asm.R5, asm.R2, 14+9, asm.Byte),
			asm.JNE.Imm(asm.R5, 6, "pass"), // TCP
			asm.LoadMem(asm.R5, asm.R2, 14+16, asm.Word),
			asm.And.Imm32(asm.R5, int32(binary.LittleEndian.Uint32(mask))),
			asm.JNE.Imm32(asm.R5, int32(binary.LittleEndian.Uint32(b[:])), "pass"),
			asm.LoadMem(asm.R5, asm.R2, 14+20+13, asm.Byte), // TCP flags (no IP options on lo)
			asm.And.Imm(asm.R5, 0x12),
			asm.JNE.Imm(asm.R5, 0x12, "pass"),
			asm.Mov.Imm(asm.R0, 1), // XDP_DROP
			asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
			asm.Return(),
		},
	})
	if err == nil {
		var l link.Link
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: 1, Flags: link.XDPGenericMode})
		if err == nil {
			var once sync.Once
			detach = func() { once.Do(func() { l.Close(); prog.Close() }) }
			t.Cleanup(detach)
			return detach
		}
		prog.Close()
	}
	if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
		t.Fatalf("dropping SYN-ACKs with XDP on lo: %v", err)
	}
	t.Skipf("needs XDP on lo to drop SYN-ACKs, which this kernel refuses: %v", err)
	return nil
}

// TestAcceptRacesHandshake: clients on every CPU against a busy accept loop.
// The child is queued just before it turns ESTABLISHED, so an acceptor on
// another CPU can take it before the handshake hook runs; such a connection
// was accepted and must never count as "not accepted" when it is destroyed.
func TestAcceptRacesHandshake(t *testing.T) {
	ln := listen(t)
	p := start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q")
	const clients, each = 4, 250
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		src := fmt.Sprintf("127.0.0.%d", 41+i)
		go func() {
			for j := 0; j < each; j++ {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
				c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ln.port)))
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
			}
			errs <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ln.waitAccepted(t, clients*each)
	time.Sleep(200 * time.Millisecond) // the server's closes reach tcp_destroy_sock
	p.stop(os.Interrupt)

	_, s := parseQueue(t, p.stdout.String())
	if s.TotalAccepted != clients*each || s.TotalNotAccepted != 0 {
		t.Errorf("accepted %d not_accepted %d, want %d, 0", s.TotalAccepted, s.TotalNotAccepted, clients*each)
	}
	// A handshake hook the kernel skipped (it interrupted the same program
	// on that CPU) is a counted, shown shortfall, never a silent one.
	if short := clients*each - int(s.TotalHandshakes); short != 0 {
		missed := 0
		for _, f := range s.Findings {
			if n, ok := strings.CutSuffix(f, " hook runs skipped by the kernel (another BPF program was running on that CPU): counts may be short by as much"); ok {
				missed, _ = strconv.Atoi(n)
			}
		}
		if short < 0 || missed < short {
			t.Errorf("handshakes %d of %d, skipped runs shown: %d (findings %q)", s.TotalHandshakes, clients*each, missed, s.Findings)
		}
	}
}
