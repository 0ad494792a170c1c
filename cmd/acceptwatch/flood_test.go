package main

// Flood tests: half-open SYNs, one address or one network far above the
// rest, accept-queue drops per address, baselines. Real loopback traffic,
// bounded in count and time, in whatever attach mode the run uses.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// synFrom starts n non-blocking connects from src to 127.0.0.1:port: each
// sends one SYN now. The sockets close when the test ends.
func synFrom(t *testing.T, src string, port, n int) []int {
	t.Helper()
	var fds []int
	for i := 0; i < n; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: netip.MustParseAddr(src).As4()}); err != nil {
			t.Fatal(err)
		}
		err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		if err != nil && err != syscall.EINPROGRESS {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { closeAll(fds) })
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

func hasDropCounter(s jsonSummary, c string) bool { return slices.Contains(s.DropCounters, c) }

// TestSynsHalfOpen: SYNs whose SYN-ACKs are dropped never complete. Each
// address's SYNs are counted exactly in every mode, and the half-open
// finding names them.
func TestSynsHalfOpen(t *testing.T) {
	requireRoot(t)
	dropSynAcks(t, netip.MustParsePrefix("127.0.20.0/24"))
	ln := listen(t)
	p := start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q", "--flood-min", "4")
	want := map[string]uint64{"127.0.20.1": 4, "127.0.20.2": 6, "127.0.20.3": 8}
	var fds []int
	for src, n := range want {
		fds = append(fds, synFrom(t, src, ln.port, int(n))...)
	}
	// Close before the clients' first SYN retransmit (1 s): one SYN each.
	time.Sleep(300 * time.Millisecond)
	closeAll(fds)
	p.stop(os.Interrupt)

	_, s := parseQueue(t, p.stdout.String())
	if s.SynCounter == nil || *s.SynCounter != "cgroup_skb" || s.TotalSyns == nil || *s.TotalSyns != 18 {
		t.Fatalf("syn_counter %v total_syns %v, want cgroup_skb and 18", s.SynCounter, s.TotalSyns)
	}
	for src, n := range want {
		a, ok := s.addr(src)
		if !ok || a.Syns != n || a.Handshakes != 0 || a.Accepted != 0 {
			t.Errorf("%s: %+v (present %v), want %d SYNs and nothing else", src, a, ok, n)
		}
		if !hasFinding(s, fmt.Sprintf("%s: %d SYNs, 0 completed handshakes", src, n)) {
			t.Errorf("no half-open finding for %s: %q", src, s.Findings)
		}
	}
	if len(s.Listeners) != 1 || s.Listeners[0].Syns == nil || *s.Listeners[0].Syns != 18 {
		t.Errorf("listeners %+v, want one with 18 SYNs", s.Listeners)
	}
}

// TestNoSynCounter: --no-syn-counter loads no per-packet program, and the
// summary says SYNs were not counted.
func TestNoSynCounter(t *testing.T) {
	watched, unwatched := listen(t), listen(t)
	p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "-q", "-v", "--no-syn-counter")
	if n := progsOfType(t, p.ids, ebpf.CGroupSKB); n != 0 {
		t.Errorf("%d cgroup_skb programs loaded with --no-syn-counter", n)
	}
	sendTraffic(t, watched, unwatched)
	p.stop(os.Interrupt)
	_, s := parseQueue(t, p.stdout.String())
	if s.SynCounter != nil || s.TotalSyns != nil || s.Addresses[0].Syns != nil {
		t.Errorf("--no-syn-counter: syn_counter %v total_syns %v, want null", s.SynCounter, s.TotalSyns)
	}
	if !strings.Contains(p.stderr.String(), "SYN counter: off") {
		t.Errorf("-v does not say the SYN counter is off:\n%s", p.stderr.String())
	}
	// Without it, the counter is one cgroup_skb program.
	p = start(t, "-port", strconv.Itoa(watched.port), "-q", "-d", "1s")
	if n := progsOfType(t, p.ids, ebpf.CGroupSKB); n != 1 {
		t.Errorf("%d cgroup_skb programs loaded, want 1", n)
	}
	p.stop(nil)
}

func progsOfType(t *testing.T, ids objIDs, typ ebpf.ProgramType) int {
	t.Helper()
	n := 0
	for _, id := range ids.progs {
		prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			t.Fatal(err)
		}
		if prog.Type() == typ {
			n++
		}
		prog.Close()
	}
	return n
}

// TestSynCounterFallback: a program attached to the cgroup root without
// multi-attach keeps others off it. acceptwatch leaves it alone and counts
// SYNs at tcp_conn_request where the mode can (fexit, kretprobe), or not at
// all (tracepoint), and -v says why.
func TestSynCounterFallback(t *testing.T) {
	requireRoot(t)
	if os.Getenv("VMTEST_GUEST") != "1" {
		t.Skip("attaches an exclusive program to the machine's root cgroup, which would change every other acceptwatch run on this machine: runs in the kernel matrix (make vmtest)")
	}
	mnt := cgroup2Mount(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSKB, AttachType: ebpf.AttachCGroupInetIngress, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	root, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	// Flags 0: nobody may attach beside it.
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: int(root.Fd()), Program: prog, Attach: ebpf.AttachCGroupInetIngress}); err != nil {
		t.Fatal(err)
	}
	defer link.RawDetachProgram(link.RawDetachProgramOptions{Target: int(root.Fd()), Program: prog, Attach: ebpf.AttachCGroupInetIngress})

	watched, unwatched := listen(t), listen(t)
	p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "-q", "-v")
	total := sendTraffic(t, watched, unwatched)
	p.stop(os.Interrupt)
	_, s := parseQueue(t, p.stdout.String())
	stderr := p.stderr.String()
	if !strings.Contains(stderr, "SYN counter: cgroup_skb/ingress unavailable") {
		t.Errorf("-v does not say why the cgroup counter is missing:\n%s", stderr)
	}
	if p.mode == "tracepoint" {
		if s.SynCounter != nil || s.TotalSyns != nil {
			t.Errorf("tracepoint mode without the cgroup counter: syn_counter %v total_syns %v, want null", s.SynCounter, s.TotalSyns)
		}
	} else if s.SynCounter == nil || *s.SynCounter != "tcp_conn_request" || s.TotalSyns == nil || *s.TotalSyns != uint64(total) {
		t.Errorf("%s mode: syn_counter %v total_syns %v, want tcp_conn_request and %d", p.mode, s.SynCounter, s.TotalSyns, total)
	}
	// The other program is still there, alone.
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(root.Fd()), Attach: ebpf.AttachCGroupInetIngress})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := prog.Info()
	id, _ := info.ID()
	if len(res.Programs) != 1 || res.Programs[0].ID != id {
		t.Errorf("root cgroup programs after acceptwatch: %+v, want only %d", res.Programs, id)
	}
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	mnt := mountPoint(t, "cgroup2")
	if mnt == "" {
		t.Fatal("no cgroup2 mount")
	}
	return mnt
}

// mountPoint is where a file system of type fstype is mounted ("" if none),
// from /proc/self/mountinfo.
func mountPoint(t *testing.T, fstype string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		before, after, _ := strings.Cut(sc.Text(), " - ")
		if fields := strings.Fields(before); len(fields) >= 5 && strings.HasPrefix(after, fstype+" ") {
			return fields[4]
		}
	}
	return ""
}

// TestFloodSource: one address opens far more connections than the others
// and is named; an even spread names nobody.
func TestFloodSource(t *testing.T) {
	ln := listen(t)
	p := start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q")
	dial(t, "127.0.0.31", "127.0.0.1", ln.port, 150)
	for i := 32; i <= 35; i++ {
		dial(t, fmt.Sprintf("127.0.0.%d", i), "127.0.0.1", ln.port, 3)
	}
	ln.waitAccepted(t, 162)
	p.stop(os.Interrupt)
	_, s := parseQueue(t, p.stdout.String())
	if !hasFinding(s, "127.0.0.31: 150 SYNs (") || !hasFinding(s, "far more than the other addresses (median 3)") {
		t.Errorf("no finding names 127.0.0.31: %q", s.Findings)
	}
	for _, f := range s.Findings {
		for i := 32; i <= 35; i++ {
			if strings.Contains(f, fmt.Sprintf("127.0.0.%d:", i)) {
				t.Errorf("finding names an ordinary address: %q", f)
			}
		}
	}

	// Five addresses, 30 each, with a minimum low enough to count them.
	p = start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q", "--flood-min", "20")
	for i := 36; i <= 40; i++ {
		dial(t, fmt.Sprintf("127.0.0.%d", i), "127.0.0.1", ln.port, 30)
	}
	ln.waitAccepted(t, 162+150)
	p.stop(os.Interrupt)
	_, s = parseQueue(t, p.stdout.String())
	if len(s.Findings) != 0 {
		t.Errorf("findings for an even spread: %q", s.Findings)
	}
}

// TestFloodPrefix: sixty addresses of one /24, two connections each, against
// three others: the network is named, no address is; --group-by prefix
// gives its row.
func TestFloodPrefix(t *testing.T) {
	ln := listen(t)
	p := start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q", "--group-by", "prefix")
	for i := 1; i <= 60; i++ {
		dial(t, fmt.Sprintf("127.0.5.%d", i), "127.0.0.1", ln.port, 2)
	}
	for _, src := range []string{"127.0.6.1", "127.0.7.1", "127.0.8.1"} {
		dial(t, src, "127.0.0.1", ln.port, 3)
	}
	ln.waitAccepted(t, 129)
	p.stop(os.Interrupt)
	_, s := parseQueue(t, p.stdout.String())
	if !hasFinding(s, "127.0.5.0/24: 120 SYNs (") || !hasFinding(s, "from 60 addresses: far more than the other networks (median 3)") {
		t.Errorf("no finding names 127.0.5.0/24: %q", s.Findings)
	}
	named := 0
	for _, f := range s.Findings {
		if strings.Contains(f, "127.0.5.0/24") {
			named++
			continue
		}
		if strings.Contains(f, "127.0.") {
			t.Errorf("finding names something else: %q", f)
		}
	}
	if named != 1 {
		t.Errorf("127.0.5.0/24 named %d times: %q", named, s.Findings)
	}
	if len(s.Addresses) != 63 || !slices.Equal(s.PrefixLen, []int{24, 64}) || len(s.Prefixes) != 4 {
		t.Fatalf("%d addresses, prefix_len %v, %d prefixes; want 63, [24 64], 4", len(s.Addresses), s.PrefixLen, len(s.Prefixes))
	}
	top := s.Prefixes[0]
	if top.Prefix != "127.0.5.0/24" || top.Addresses != 60 || top.Accepted != 120 || top.Syns == nil || *top.Syns != 120 {
		t.Errorf("first prefix row %+v, want 127.0.5.0/24 with 60 addresses, 120 accepts and SYNs", top)
	}
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi)
	return ma > major || (ma == major && mi >= minor)
}

// listenOverflows reads the network namespace's TcpExt ListenOverflows.
func listenOverflows(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "ListenOverflows" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	t.Fatal("no ListenOverflows in /proc/net/netstat")
	return 0
}

// TestDropFinalAck: a handshake whose final ACK finds the accept queue full.
// 127.0.0.41's SYN is taken while the queue is empty, but its SYN-ACK is
// dropped until 127.0.0.42 has filled the queue (backlog 1 holds two); the
// resent SYN-ACK's ACK is then dropped. Kernels with the TCP_LISTEN_OVERFLOW
// drop reason (6.15+) attribute that drop to 127.0.0.41; older ones count it
// only in ListenOverflows. Its resent SYN belongs to a handshake under way:
// never a SYN drop.
func TestDropFinalAck(t *testing.T) {
	requireRoot(t)
	fd, port := rawListener(t, 1)
	_ = fd
	detach := dropSynAcks(t, netip.MustParsePrefix("127.0.0.41/32"))
	p := start(t, "-port", strconv.Itoa(port), "-o", "json", "-q")
	base := listenOverflows(t)
	synFrom(t, "127.0.0.41", port, 1)
	time.Sleep(100 * time.Millisecond)
	connectN(t, "127.0.0.42", port, 2)
	detach()
	// The listener resends its SYN-ACK after 1 s, then 3 s.
	deadline := time.Now().Add(10 * time.Second)
	for listenOverflows(t) == base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	p.stop(os.Interrupt)
	_, s := parseQueue(t, p.stdout.String())
	// Read by acceptwatch with its own counts.
	overflows := s.KernelCounters["ListenOverflows"]
	if overflows == 0 {
		t.Fatalf("ListenOverflows did not move: %v", s.KernelCounters)
	}
	a41, _ := s.addr("127.0.0.41")
	a42, _ := s.addr("127.0.0.42")
	finalAck := kernelAtLeast(t, 6, 15)
	if hasDropCounter(s, "final_ack") != finalAck {
		t.Fatalf("drop_counters %v on this kernel, want final_ack: %v (6.15+)", s.DropCounters, finalAck)
	}
	if !hasDropCounter(s, "syn") {
		t.Fatalf("drop_counters %v, want syn (cgroup counter)", s.DropCounters)
	}
	if a42.Drops != 0 {
		t.Errorf("127.0.0.42 (queued) has %d drops, want 0", a42.Drops)
	}
	if finalAck {
		if a41.Drops == 0 || a41.Drops != overflows || s.TotalDrops == nil || *s.TotalDrops != overflows {
			t.Errorf("127.0.0.41 drops %d, total %v; want all %d overflows", a41.Drops, s.TotalDrops, overflows)
		}
		if !hasFinding(s, "by address: 127.0.0.41 ") {
			t.Errorf("no finding names 127.0.0.41's drops: %q", s.Findings)
		}
	} else if a41.Drops != 0 || s.TotalDrops == nil || *s.TotalDrops != 0 {
		t.Errorf("127.0.0.41 drops %d, total %v; want 0 (final ACK drops are not attributed before 6.15)", a41.Drops, s.TotalDrops)
	}
}

// TestBaseline: a saved normal period, then ten times the rate from a new
// address: the comparison findings.
func TestBaseline(t *testing.T) {
	ln := listen(t)
	file := filepath.Join(t.TempDir(), "normal.json")
	p := start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q", "--save-baseline", file)
	for i := 0; i < 10; i++ {
		dial(t, "127.0.0.51", "127.0.0.1", ln.port, 1)
		time.Sleep(100 * time.Millisecond)
	}
	ln.waitAccepted(t, 10)
	p.stop(os.Interrupt)
	if !strings.Contains(p.stderr.String(), "acceptwatch: baseline saved to "+file) {
		t.Errorf("no saved line on stderr: %q", p.stderr.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var saved struct {
		Format    string  `json:"format"`
		Version   int     `json:"version"`
		DurationS float64 `json:"duration_s"`
		Listeners []struct {
			Port        int      `json:"port"`
			AcceptsPerS float64  `json:"accepts_per_s"`
			SynsPerS    *float64 `json:"syns_per_s"`
		} `json:"listeners"`
		Addresses []struct {
			Addr string `json:"addr"`
		} `json:"addresses"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if saved.Format != "acceptwatch-baseline" || saved.Version != 1 || saved.DurationS <= 0 || len(saved.Listeners) != 1 ||
		saved.Listeners[0].Port != ln.port || saved.Listeners[0].AcceptsPerS <= 0 || len(saved.Addresses) != 1 || saved.Addresses[0].Addr != "127.0.0.51" {
		t.Fatalf("baseline file:\n%s", b)
	}
	baseRate := saved.Listeners[0].AcceptsPerS

	// At least ten times the rate: 150 connections as fast as they go.
	p = start(t, "-port", strconv.Itoa(ln.port), "-o", "json", "-q", "--baseline", file, "--flood-min", "50")
	dial(t, "127.0.0.52", "127.0.0.1", ln.port, 150)
	ln.waitAccepted(t, 160)
	p.stop(os.Interrupt)
	_, s := parseQueue(t, p.stdout.String())
	if !hasFinding(s, fmt.Sprintf("port %d: ", ln.port)) || !hasFinding(s, "accepts/s, baseline ") {
		t.Errorf("no port finding against the baseline (%v/s): %q", baseRate, s.Findings)
	}
	if !hasFinding(s, "127.0.0.52: new top address, not in baseline") {
		t.Errorf("no new-address finding: %q", s.Findings)
	}
}
