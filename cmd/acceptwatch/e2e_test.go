package main

// End-to-end tests: they run the real acceptwatch binary as root, make real
// loopback connections and check its output. The same test binary runs in the
// kernel matrix (vmtest/) with these variables:
//
//	ACCEPTWATCH_BIN          the acceptwatch binary (else it is built here)
//	ACCEPTWATCH_ATTACH       attach mode under test (default auto)
//	ACCEPTWATCH_EXPECT_AUTO  the mode auto must pick on this kernel
//	ACCEPTWATCH_EXPECT_UNSUPPORTED  modes this kernel cannot give (comma-separated)
//	ACCEPTWATCH_NO_SKIP=1    a missing capability is a failure, not a skip

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// startTimeout is generous: under QEMU's software emulation loading the
// programs takes seconds.
const startTimeout = 90 * time.Second

// stopSlack is how late a --duration stop or an --interval window may end:
// the loop wakes at the boundary, then reads the counters: milliseconds on
// the host; under QEMU's software emulation (the kernel matrix sets
// ACCEPTWATCH_NO_SKIP) a VM sharing two cores with another was seen 140 ms
// late.
var stopSlack = func() time.Duration {
	if os.Getenv("ACCEPTWATCH_NO_SKIP") != "" {
		return 250 * time.Millisecond
	}
	return 60 * time.Millisecond
}()

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// requireRoot skips on a host without the privileges, and fails in the
// kernel matrix where a skip would hide a missing mode.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
		t.Fatal("needs root (CAP_BPF, CAP_PERFMON), and ACCEPTWATCH_NO_SKIP=1 forbids skipping")
	}
	t.Skip("needs root (CAP_BPF, CAP_PERFMON) to load BPF programs: run the tests with sudo")
}

func acceptwatchBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("ACCEPTWATCH_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "acceptwatch-e2e")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "acceptwatch")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func attachMode() string {
	if m := os.Getenv("ACCEPTWATCH_ATTACH"); m != "" {
		return m
	}
	return "auto"
}

// userDir makes a directory that other users can reach (t.TempDir's parent
// is private), removed at the end of the test.
func userDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "acceptwatch-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, mode)
	return dir
}

// proc is a running acceptwatch.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	mode   string
	ids    objIDs // BPF programs and maps that appeared while it ran

	done    chan struct{} // closed when the process has exited
	waitErr error
}

// start runs acceptwatch with args (plus --attach and a ready file) and
// waits until its programs are attached.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCmd(t, acceptwatchBin(t), nil, args...)
}

// startCmd is start for the binary bin, with cmd changed by setup (nil:
// as is) before it runs.
func startCmd(t *testing.T, bin string, setup func(*exec.Cmd), args ...string) *proc {
	t.Helper()
	requireRoot(t)
	dir := userDir(t, 0o777) // the ready file, for a process of any user
	ready := filepath.Join(dir, "ready")
	args = append([]string{"--attach", attachMode(), "--ready-file", ready}, args...)
	p := &proc{t: t, cmd: exec.Command(bin, args...)}
	if setup != nil {
		setup(p.cmd)
	}
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("acceptwatch exited before tracing: %v\nstderr: %s", p.waitErr, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("acceptwatch did not start within %v; stderr:\n%s", startTimeout, p.stderr.String())
		}
	}
	b, err := os.ReadFile(ready)
	if err != nil {
		t.Fatal(err)
	}
	p.mode = strings.TrimSpace(string(b))
	if want := attachMode(); want != "auto" && p.mode != want && !slices.Contains(args, "auto") {
		t.Fatalf("attached with %s, asked for %s", p.mode, want)
	}
	p.ids = ownedIDs(t, p.cmd.Process.Pid)
	if len(p.ids.progs) == 0 || len(p.ids.maps) == 0 {
		t.Fatalf("acceptwatch holds no BPF program or map while it runs: %+v", p.ids)
	}
	return p
}

// stop ends acceptwatch with sig (0: wait for it to exit by itself) and checks
// the exit status and that its programs and maps were released.
func (p *proc) stop(sig os.Signal) {
	p.t.Helper()
	if sig != nil {
		if err := p.cmd.Process.Signal(sig); err != nil {
			p.t.Fatal(err)
		}
	}
	select {
	case <-p.done:
		if p.waitErr != nil {
			p.t.Fatalf("acceptwatch: %v\nstderr: %s", p.waitErr, p.stderr.String())
		}
	case <-time.After(startTimeout):
		p.cmd.Process.Kill()
		p.t.Fatalf("acceptwatch did not exit after %v", sig)
	}
	p.assertReleased()
}

func (p *proc) assertReleased() {
	p.t.Helper()
	// The kernel frees maps after an RCU grace period; give it a moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := loadedIDs(p.t).intersect(p.ids)
		if len(left.progs)+len(left.maps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("after exit, still loaded: programs %v, maps %v", left.progs, left.maps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type objIDs struct{ progs, maps []uint32 }

// ownedIDs lists the BPF programs and maps a process holds, from the
// fdinfo of its descriptors (other tracers may be loading their own).
func ownedIDs(t *testing.T, pid int) objIDs {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids objIDs
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				continue
			}
			switch k {
			case "prog_id":
				if !slices.Contains(ids.progs, uint32(id)) {
					ids.progs = append(ids.progs, uint32(id))
				}
			case "map_id":
				if !slices.Contains(ids.maps, uint32(id)) {
					ids.maps = append(ids.maps, uint32(id))
				}
			}
		}
	}
	return ids
}

func loadedIDs(t *testing.T) objIDs {
	t.Helper()
	var ids objIDs
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			t.Fatalf("listing BPF programs: %v", err)
		}
		ids.progs = append(ids.progs, uint32(next))
		id = next
	}
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			t.Fatalf("listing BPF maps: %v", err)
		}
		ids.maps = append(ids.maps, uint32(next))
		id = next
	}
	return ids
}

func (a objIDs) minus(b objIDs) objIDs {
	keep := func(x, y []uint32) (out []uint32) {
		for _, id := range x {
			if !slices.Contains(y, id) {
				out = append(out, id)
			}
		}
		return out
	}
	return objIDs{keep(a.progs, b.progs), keep(a.maps, b.maps)}
}

func (a objIDs) intersect(b objIDs) objIDs {
	return a.minus(a.minus(b))
}

// server is a dual-stack listener that accepts and closes, counting.
type server struct {
	ln       net.Listener
	port     int
	mu       sync.Mutex
	accepted int
}

func listen(t *testing.T) *server {
	t.Helper()
	return listenAt(t, "[::]:0") // dual-stack: IPv4 clients arrive v4-mapped
}

// listenAt is listen on the address addr, in the calling thread's network
// namespace.
func listenAt(t *testing.T, addr string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *server) waitAccepted(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		got := s.accepted
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server accepted %d connections, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dial connects from src to the port n times, reads until the server closes.
func dial(t *testing.T, src string, dst string, port, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort(dst, strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("dial %s -> %s:%d: %v", src, dst, port, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
}

// traffic is the standard mix: several IPv4 sources and ::1 to the watched
// port, and one more source to an unwatched port.
var traffic = []struct {
	src, dst string
	n        int
}{
	{"127.0.0.2", "127.0.0.1", 2},
	{"127.0.0.3", "127.0.0.1", 3},
	{"127.0.0.4", "127.0.0.1", 4},
	{"::1", "::1", 1},
}

const unwatchedSrc = "127.0.0.9"

func wantCounts() map[string]uint64 {
	m := map[string]uint64{}
	for _, tr := range traffic {
		m[tr.src] += uint64(tr.n)
	}
	return m
}

func sendTraffic(t *testing.T, watched, unwatched *server) int {
	t.Helper()
	total := 0
	for _, tr := range traffic {
		dial(t, tr.src, tr.dst, watched.port, tr.n)
		total += tr.n
	}
	dial(t, unwatchedSrc, "127.0.0.1", unwatched.port, 3)
	watched.waitAccepted(t, total)
	unwatched.waitAccepted(t, 3)
	return total
}

type jsonEvent struct {
	Type       string `json:"type"`
	Time       string `json:"time"`
	PID        int    `json:"pid"`
	Comm       string `json:"comm"`
	NetNS      uint32 `json:"netns"`
	CgroupID   uint64 `json:"cgroup_id"`
	Cgroup     string `json:"cgroup"`
	Family     int    `json:"family"`
	LocalAddr  string `json:"local_addr"`
	LocalPort  int    `json:"local_port"`
	RemoteAddr string `json:"remote_addr"`
	RemotePort int    `json:"remote_port"`

	QueueWaitUs *int64  `json:"queue_wait_us"`
	Backlog     *uint32 `json:"backlog"`
	BacklogMax  *uint32 `json:"backlog_max"`
	ClientGone  bool    `json:"client_gone"`
	State       string  `json:"state"`
}

type jsonSummary struct {
	Type               string            `json:"type"`
	Final              bool              `json:"final"`
	Start              time.Time         `json:"start"`
	End                time.Time         `json:"end"`
	DurationS          float64           `json:"duration_s"`
	AttachMode         string            `json:"attach_mode"`
	Ports              []string          `json:"ports"`
	TotalAccepted      uint64            `json:"total_accepted"`
	TotalHandshakes    uint64            `json:"total_handshakes"`
	TotalNotAccepted   uint64            `json:"total_not_accepted"`
	TotalClientGone    uint64            `json:"total_client_gone"`
	TotalSynackRetrans uint64            `json:"total_synack_retrans"`
	TotalSyns          *uint64           `json:"total_syns"`
	TotalDrops         *uint64           `json:"total_drops"`
	SynCounter         *string           `json:"syn_counter"`
	DropCounters       []string          `json:"drop_counters"`
	LostEvents         uint64            `json:"lost_events"`
	AddressOverflow    uint64            `json:"address_overflow"`
	KernelCounters     map[string]uint64 `json:"kernel_counters"`
	CountersNetNS      uint32            `json:"kernel_counters_netns"`
	Findings           []string          `json:"findings"`
	ConnectionsNow     *snapStates       `json:"connections_now"`
	NetNS              *uint64           `json:"netns"`
	Cgroup             string            `json:"cgroup"`
	Listeners          []struct {
		NetNS        uint32    `json:"netns"`
		Port         int       `json:"port"`
		Accepted     uint64    `json:"accepted"`
		NotAccepted  uint64    `json:"not_accepted"`
		Syns         *uint64   `json:"syns"`
		Drops        *uint64   `json:"drops"`
		BacklogMax   uint32    `json:"backlog_max"`
		BacklogLimit uint32    `json:"backlog_limit"`
		QueueWait    jsonWaits `json:"queue_wait"`
	} `json:"listeners"`
	Addresses []struct {
		NetNS         uint32    `json:"netns"`
		Addr          string    `json:"addr"`
		Accepted      uint64    `json:"accepted"`
		Handshakes    uint64    `json:"handshakes"`
		First         *string   `json:"first"`
		Last          *string   `json:"last"`
		NotAccepted   uint64    `json:"not_accepted"`
		ClientGone    uint64    `json:"client_gone"`
		SynackRetrans uint64    `json:"synack_retrans"`
		Syns          *uint64   `json:"syns"`
		Open          *uint64   `json:"open"`
		SynRecv       *uint64   `json:"syn_recv"`
		Drops         *uint64   `json:"drops"`
		QueueWait     jsonWaits `json:"queue_wait"`
	} `json:"addresses"`
	PrefixLen []int `json:"prefix_len"`
	Prefixes  []struct {
		Prefix    string  `json:"prefix"`
		Addresses uint64  `json:"addresses"`
		Accepted  uint64  `json:"accepted"`
		Syns      *uint64 `json:"syns"`
	} `json:"prefixes"`
}

// addr returns the summary's row for one address (ok false if absent).
func (s jsonSummary) addr(a string) (row struct {
	Accepted, Handshakes, Syns, Drops uint64
}, ok bool) {
	for _, r := range s.Addresses {
		if r.Addr == a {
			row.Accepted, row.Handshakes = r.Accepted, r.Handshakes
			if r.Syns != nil {
				row.Syns = *r.Syns
			}
			if r.Drops != nil {
				row.Drops = *r.Drops
			}
			return row, true
		}
	}
	return row, false
}

type jsonWaits struct {
	Count    uint64    `json:"count"`
	P50      *int64    `json:"p50_us"`
	P99      *int64    `json:"p99_us"`
	P50Range *[2]int64 `json:"p50_range_us"`
	P99Range *[2]int64 `json:"p99_range_us"`
	Min      *int64    `json:"min_us"`
	Max      *int64    `json:"max_us"`
}

func parseJSON(t *testing.T, out string) (events []jsonEvent, summaries []jsonSummary) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var probe struct{ Type string }
		if err := json.Unmarshal(line, &probe); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		switch probe.Type {
		case "accept":
			var e jsonEvent
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatal(err)
			}
			events = append(events, e)
		case "summary":
			var s jsonSummary
			if err := json.Unmarshal(line, &s); err != nil {
				t.Fatal(err)
			}
			summaries = append(summaries, s)
		default:
			t.Fatalf("unknown JSON object type in %q", line)
		}
	}
	return events, summaries
}

func finalSummary(t *testing.T, sums []jsonSummary) jsonSummary {
	t.Helper()
	if len(sums) == 0 || !sums[len(sums)-1].Final {
		t.Fatalf("no final summary in output (%d summaries)", len(sums))
	}
	return sums[len(sums)-1]
}

func summaryCounts(s jsonSummary) (accepted, handshakes map[string]uint64) {
	accepted, handshakes = map[string]uint64{}, map[string]uint64{}
	for _, a := range s.Addresses {
		accepted[a.Addr] = a.Accepted
		handshakes[a.Addr] = a.Handshakes
	}
	return accepted, handshakes
}

// TestTraceJSON is the core end-to-end case: exact per-address counts, IPv4
// clients of a dual-stack listener shown as IPv4, complete live events, the
// unwatched port absent, handshakes equal to accepts.
func TestTraceJSON(t *testing.T) {
	watched, unwatched := listen(t), listen(t)
	p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json")
	total := sendTraffic(t, watched, unwatched)
	p.stop(os.Interrupt)

	events, sums := parseJSON(t, p.stdout.String())
	// Live events, normalised to the fields that do not vary between runs.
	var got []string
	for _, e := range events {
		if e.LocalPort != watched.port {
			t.Errorf("event on unwatched port %d: %+v", e.LocalPort, e)
		}
		if e.PID != os.Getpid() {
			t.Errorf("event pid %d, want the server's %d", e.PID, os.Getpid())
		}
		if e.Comm == "" || e.RemotePort == 0 {
			t.Errorf("event with empty fields: %+v", e)
		}
		if _, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
			t.Errorf("event time %q: %v", e.Time, err)
		}
		got = append(got, fmt.Sprintf("%d %s -> %s", e.Family, e.RemoteAddr, e.LocalAddr))
	}
	var want []string
	for _, tr := range traffic {
		fam := 4
		if strings.Contains(tr.src, ":") {
			fam = 6
		}
		for i := 0; i < tr.n; i++ {
			want = append(want, fmt.Sprintf("%d %s -> %s", fam, tr.src, tr.dst))
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("live events:\n got %q\nwant %q", got, want)
	}

	s := finalSummary(t, sums)
	accepted, handshakes := summaryCounts(s)
	wantAcc := wantCounts()
	if !mapsEqual(accepted, wantAcc) {
		t.Errorf("summary accepted per address = %v, want %v", accepted, wantAcc)
	}
	if !mapsEqual(handshakes, wantAcc) {
		t.Errorf("summary handshakes per address = %v, want %v (equal to accepts)", handshakes, wantAcc)
	}
	if s.TotalAccepted != uint64(total) || s.TotalHandshakes != uint64(total) {
		t.Errorf("totals accepted=%d handshakes=%d, want %d each", s.TotalAccepted, s.TotalHandshakes, total)
	}
	if s.LostEvents != 0 || s.AddressOverflow != 0 {
		t.Errorf("lost=%d overflow=%d, want 0", s.LostEvents, s.AddressOverflow)
	}
	if s.AttachMode != p.mode || !slices.Equal(s.Ports, []string{strconv.Itoa(watched.port)}) {
		t.Errorf("summary mode %q ports %v, want %q [%d]", s.AttachMode, s.Ports, p.mode, watched.port)
	}
	for _, a := range s.Addresses {
		if a.First == nil || a.Last == nil {
			t.Errorf("address %s without first/last times", a.Addr)
		}
		// SYNs are counted in every mode (cgroup_skb on the cgroup v2
		// root); on loopback each connection sends exactly one.
		if a.Syns == nil || *a.Syns != a.Accepted {
			t.Errorf("%s mode: %s syns %v, want %d (one per connection)", p.mode, a.Addr, a.Syns, a.Accepted)
		}
		if a.Drops != nil && *a.Drops != 0 {
			t.Errorf("%s: %d drops, want 0", a.Addr, *a.Drops)
		}
	}
	if s.SynCounter == nil || *s.SynCounter != "cgroup_skb" || s.TotalSyns == nil || *s.TotalSyns != uint64(total) {
		t.Errorf("syn_counter %v total_syns %v, want cgroup_skb and %d", s.SynCounter, s.TotalSyns, total)
	}
	// An ordinary run has nothing to report.
	if len(s.Findings) != 0 {
		t.Errorf("findings for an ordinary run: %q", s.Findings)
	}
	if !strings.Contains(p.stderr.String(), "acceptwatch: tracing") {
		t.Errorf("no 'acceptwatch: tracing' line on stderr: %q", p.stderr.String())
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestTraceText checks the live lines and the text summary.
func TestTraceText(t *testing.T) {
	watched, unwatched := listen(t), listen(t)
	p := start(t, "-port", strconv.Itoa(watched.port), "--top", "2")
	total := sendTraffic(t, watched, unwatched)
	p.stop(syscall.SIGTERM)

	out := p.stdout.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "RADDR") {
		t.Fatalf("no header line:\n%s", out)
	}
	live := map[string]int{}
	port := strconv.Itoa(watched.port)
	for _, l := range lines[1:] {
		if l == "" {
			break
		}
		f := strings.Fields(l)
		if len(f) != 10 {
			t.Fatalf("live line with %d fields: %q", len(f), l)
		}
		// WAIT: the handshake was seen, so the queue wait is known; BL:
		// the listener was seen, so its queue is known.
		if _, err := time.ParseDuration(strings.Replace(f[8], "µs", "us", 1)); err != nil {
			t.Errorf("WAIT %q is not a duration: %q", f[8], l)
		}
		// Go listens with MPTCP where it can: the limit must still be the
		// listen() backlog, read from the TCP subflow.
		if !regexp.MustCompile(`^[0-9]+/` + strconv.Itoa(goBacklog(t)) + `$`).MatchString(f[9]) {
			t.Errorf("BL %q is not queued/%d: %q", f[9], goBacklog(t), l)
		}
		if f[5] != port {
			t.Errorf("live line on port %s: %q", f[5], l)
		}
		if f[1] != strconv.Itoa(os.Getpid()) {
			t.Errorf("live line pid %s, want %d: %q", f[1], os.Getpid(), l)
		}
		live[f[3]+" "+f[6]]++
	}
	want := map[string]int{}
	for _, tr := range traffic {
		fam := "4"
		if strings.Contains(tr.src, ":") {
			fam = "6"
		}
		want[fam+" "+tr.src] += tr.n
	}
	if fmt.Sprint(live) != fmt.Sprint(want) {
		t.Errorf("live lines per family and address = %v, want %v", live, want)
	}
	for _, frag := range []string{
		"REMOTE", "127.0.0.4 ", "127.0.0.3 ",
		"… and 2 more addresses (3 accepts)",
		"lost live events: 0", "address-map overflow: 0",
	} {
		if !strings.Contains(out, frag) {
			t.Errorf("summary lacks %q:\n%s", frag, out)
		}
	}
	// TOTAL accepted syns handshakes [drops] not-accepted gone
	// synack-retransmits open syn-recv: SYNS in every mode, DROPS where the
	// kernel lets acceptwatch attribute them; then OPEN and SYN_RECV now:
	// the server closed every connection.
	totals := []string{"TOTAL", strconv.Itoa(total), strconv.Itoa(total), strconv.Itoa(total), "0", "0", "0", "0", "0"}
	if regexp.MustCompile(`(?m)^REMOTE +ACCEPTED +SYNS +HANDSHAKES +DROPS `).MatchString(out) {
		totals = slices.Insert(totals, 4, "0")
	}
	if !containsFields(out, totals...) || !regexp.MustCompile(`(?m)^REMOTE +ACCEPTED +SYNS +HANDSHAKES `).MatchString(out) {
		t.Errorf("no SYNS column or no %q line:\n%s", totals, out)
	}
	if strings.Contains(out, unwatchedSrc) {
		t.Errorf("unwatched source %s appears:\n%s", unwatchedSrc, out)
	}
}

func containsFields(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		if slices.Equal(strings.Fields(l), fields) {
			return true
		}
	}
	return false
}

// TestFilters: -6 keeps only IPv6 clients; --pid of another process keeps
// no accepts but every handshake (those have no process).
func TestFilters(t *testing.T) {
	t.Run("ipv6", func(t *testing.T) {
		watched, unwatched := listen(t), listen(t)
		p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "-6")
		sendTraffic(t, watched, unwatched)
		p.stop(os.Interrupt)
		_, sums := parseJSON(t, p.stdout.String())
		acc, hs := summaryCounts(finalSummary(t, sums))
		want := map[string]uint64{"::1": 1}
		if !mapsEqual(acc, want) || !mapsEqual(hs, want) {
			t.Errorf("-6: accepted %v handshakes %v, want %v", acc, hs, want)
		}
	})
	t.Run("pid", func(t *testing.T) {
		watched, unwatched := listen(t), listen(t)
		p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "--pid", "1")
		total := sendTraffic(t, watched, unwatched)
		p.stop(os.Interrupt)
		events, sums := parseJSON(t, p.stdout.String())
		s := finalSummary(t, sums)
		if len(events) != 0 || s.TotalAccepted != 0 || s.TotalHandshakes != uint64(total) {
			t.Errorf("--pid 1: %d events, accepted %d, handshakes %d; want 0, 0, %d",
				len(events), s.TotalAccepted, s.TotalHandshakes, total)
		}
	})
}

// TestStops: --count and --duration end the run by themselves with a summary,
// and every stop releases the programs and maps (checked by stop).
func TestStops(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		watched, unwatched := listen(t), listen(t)
		p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "--count", "3")
		sendTraffic(t, watched, unwatched)
		p.stop(nil)
		events, sums := parseJSON(t, p.stdout.String())
		if len(events) != 3 {
			t.Errorf("--count 3 printed %d events", len(events))
		}
		finalSummary(t, sums)
	})
	t.Run("duration", func(t *testing.T) {
		watched := listen(t)
		p := start(t, "-port", strconv.Itoa(watched.port), "-q", "--duration", "1s")
		p.stop(nil)
		if !strings.Contains(p.stdout.String(), "no connections") {
			t.Errorf("summary after --duration:\n%s", p.stdout.String())
		}
		// The summary covers the time tracing was on: the second asked
		// for, not a poll interval more.
		if !regexp.MustCompile(`\(1\.0s\)`).MatchString(p.stdout.String()) {
			t.Errorf("--duration 1s summary does not say (1.0s):\n%s", p.stdout.String())
		}
		p = start(t, "-port", strconv.Itoa(watched.port), "-q", "-o", "json", "--duration", "1s")
		p.stop(nil)
		_, sums := parseJSON(t, p.stdout.String())
		if d := finalSummary(t, sums).DurationS; d < 1 || d > 1+stopSlack.Seconds() {
			t.Errorf("--duration 1s: duration_s %.3f, want 1 to %.3f", d, 1+stopSlack.Seconds())
		}
	})
	t.Run("interval", func(t *testing.T) {
		watched, unwatched := listen(t), listen(t)
		p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "-q", "--interval", "300ms")
		total := sendTraffic(t, watched, unwatched)
		time.Sleep(1500 * time.Millisecond) // several window boundaries
		p.stop(os.Interrupt)
		_, sums := parseJSON(t, p.stdout.String())
		s := finalSummary(t, sums)
		var windows uint64
		for i, w := range sums[:len(sums)-1] {
			if w.Final {
				t.Errorf("window summary marked final")
			}
			windows += w.TotalAccepted
			// Windows follow each other without gaps, from the run's
			// start, each as long as asked (the last one ends at the stop).
			if i == 0 && !w.Start.Equal(s.Start) || i > 0 && !w.Start.Equal(sums[i-1].End) {
				t.Errorf("window %d starts at %v, previous ended at %v (run start %v)", i, w.Start, sums[max(i-1, 0)].End, s.Start)
			}
			if i < len(sums)-2 && (w.DurationS < 0.3 || w.DurationS > 0.3+stopSlack.Seconds()) {
				t.Errorf("window %d lasted %.3fs, want 0.3 to %.3f", i, w.DurationS, 0.3+stopSlack.Seconds())
			}
		}
		if len(sums) < 5 || windows != uint64(total) || s.TotalAccepted != uint64(total) {
			t.Errorf("%d summaries; windows add up to %d accepts, final %d; want >=5, %d, %d",
				len(sums), windows, s.TotalAccepted, total, total)
		}
	})
	// A hangup (terminal closed) ends the run like Ctrl-C, with the summary.
	t.Run("sighup", func(t *testing.T) {
		watched, unwatched := listen(t), listen(t)
		p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json", "-q")
		total := sendTraffic(t, watched, unwatched)
		p.stop(syscall.SIGHUP)
		_, sums := parseJSON(t, p.stdout.String())
		if s := finalSummary(t, sums); s.TotalAccepted != uint64(total) {
			t.Errorf("summary after SIGHUP: %d accepted, want %d", s.TotalAccepted, total)
		}
	})
	t.Run("closed-stdout", func(t *testing.T) {
		watched, unwatched := listen(t), listen(t)
		requireRoot(t)
		ready := filepath.Join(t.TempDir(), "ready")
		cmd := exec.Command(acceptwatchBin(t), "--attach", attachMode(), "--ready-file", ready, "-port", strconv.Itoa(watched.port))
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = w, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		waitFile(t, ready)
		ids := ownedIDs(t, cmd.Process.Pid)
		// Like `| head -1`: read the first line, then close the pipe.
		sendTraffic(t, watched, unwatched)
		if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || !strings.HasPrefix(line, "TIME") {
			t.Fatalf("first line %q, %v", line, err)
		}
		r.Close()
		sendTraffic(t, watched, unwatched) // the next write meets the closed pipe
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("exit after closed stdout: %v; stderr %q", err, stderr.String())
			}
		case <-time.After(startTimeout):
			cmd.Process.Kill()
			t.Fatal("acceptwatch kept running after its stdout was closed")
		}
		if s := stderr.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "acceptwatch: tracing") {
			t.Errorf("stderr after closed stdout: %q, want only the tracing line", s)
		}
		(&proc{t: t, ids: ids}).assertReleased()
	})
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuto: -v explains the choice; where the expected mode is known (in the
// kernel matrix) auto must pick it, and forcing a mode the kernel cannot
// give fails saying why.
func TestAuto(t *testing.T) {
	p := start(t, "-v", "--attach", "auto", "--duration", "1s", "-q")
	p.stop(nil)
	stderr := p.stderr.String()
	var mode string
	for _, l := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(l, "acceptwatch: attach mode "); ok && strings.HasSuffix(rest, ": attached") {
			mode = strings.TrimSuffix(rest, ": attached")
		}
	}
	if mode == "" || mode != p.mode || !strings.Contains(stderr, "with "+mode+" ") {
		t.Fatalf("-v does not say which mode attached:\n%s", stderr)
	}
	// Every mode before the chosen one must say why it failed.
	for _, m := range []string{"fexit", "kretprobe", "tracepoint"} {
		if m == mode {
			break
		}
		if !strings.Contains(stderr, "attach mode "+m+": failed: ") {
			t.Errorf("-v does not say why %s failed:\n%s", m, stderr)
		}
	}
	if want := os.Getenv("ACCEPTWATCH_EXPECT_AUTO"); want != "" && mode != want {
		t.Errorf("auto picked %s, want %s", mode, want)
	}
	for _, m := range strings.FieldsFunc(os.Getenv("ACCEPTWATCH_EXPECT_UNSUPPORTED"), func(r rune) bool { return r == ',' }) {
		t.Run("refuses-"+m, func(t *testing.T) { refusesMode(t, m, stderr) })
	}
}

// refusesMode: forced to a mode the kernel lacks, acceptwatch exits 1 with
// one line naming the mode and why, the reason auto's -v gave, and leaves
// no program or map loaded.
func refusesMode(t *testing.T, mode, autoStderr string) {
	var reason string
	for _, l := range strings.Split(autoStderr, "\n") {
		if r, ok := strings.CutPrefix(l, "acceptwatch: attach mode "+mode+": failed: "); ok {
			reason = r
		}
	}
	if reason == "" {
		t.Fatalf("auto's -v does not say why %s failed:\n%s", mode, autoStderr)
	}
	before := loadedIDs(t)
	cmd := exec.Command(acceptwatchBin(t), "--attach", mode, "--duration", "1s", "-q")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("--attach %s: exit %v, want status 1; stderr: %s", mode, err, stderr.String())
	}
	s := stderr.String()
	if !strings.HasPrefix(s, "acceptwatch: ") || strings.Count(s, "\n") != 1 || !strings.Contains(s, mode+": "+reason) {
		t.Errorf("--attach %s: stderr %q, want one line with %q", mode, s, mode+": "+reason)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := loadedIDs(t).minus(before)
		if len(left.progs)+len(left.maps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--attach %s left programs %v, maps %v loaded", mode, left.progs, left.maps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBlockedAcceptor: a server already blocked in accept() when tracing
// starts. Its handshakes are counted in every mode; the accept that was
// already under way is seen only where the hook is at syscall exit.
func TestBlockedAcceptor(t *testing.T) {
	requireRoot(t)
	fd, port := blockingListener(t)
	const n = 3
	accepted := make(chan error, 1)
	blocked := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			if i == 0 {
				close(blocked)
			}
			nfd, _, err := syscall.Accept(fd)
			if err != nil {
				accepted <- err
				return
			}
			syscall.Close(nfd)
		}
		accepted <- nil
	}()
	<-blocked
	time.Sleep(200 * time.Millisecond) // let it block in the kernel
	p := start(t, "-port", strconv.Itoa(port), "-o", "json")
	dial(t, "127.0.0.6", "127.0.0.1", port, n)
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blocking server did not accept")
	}
	p.stop(os.Interrupt)
	_, sums := parseJSON(t, p.stdout.String())
	s := finalSummary(t, sums)
	want := uint64(n - 1) // fexit and kretprobe hook the call, which began before them
	if p.mode == "tracepoint" {
		want = n
	}
	if s.TotalAccepted != want || s.TotalHandshakes != n {
		t.Errorf("mode %s: accepted %d handshakes %d, want %d and %d", p.mode, s.TotalAccepted, s.TotalHandshakes, want, n)
	}
}

// blockingListener makes a listening socket with a blocking file descriptor
// on 127.0.0.1, outside Go's poller, so accept() really sleeps in the kernel.
func blockingListener(t *testing.T) (int, int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, sa.(*syscall.SockaddrInet4).Port
}

// TestErrors: usage errors exit 2 with one line naming the bad value; a
// process without privileges exits 1 naming the capabilities and sudo.
func TestErrors(t *testing.T) {
	bin := acceptwatchBin(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	os.WriteFile(corrupt, []byte("{\"format\": \"acceptwatch-baseline\", \"version\": 1, \"duration_s\": 3,\n garbage"), 0o644)
	newer := filepath.Join(dir, "newer.json")
	os.WriteFile(newer, []byte(`{"format": "acceptwatch-baseline", "version": 9}`), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-port", "0"}, `"0"`},
		{[]string{"-port", "70000"}, `"70000"`},
		{[]string{"-port", "abc"}, `"abc"`},
		{[]string{"-port", "90-80"}, `"90-80"`},
		{[]string{"--port=80", "-o", "xml"}, `"xml"`},
		{[]string{"--attach", "uprobe"}, `"uprobe"`},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"-4", "-6"}, "-4 and -6"},
		{[]string{"--group-by", "port"}, `"port"`},
		{[]string{"--prefix", "33"}, `"33"`},
		{[]string{"--prefix", "24,200"}, `"24,200"`},
		{[]string{"--flood-share", "1.5"}, "1.5"},
		{[]string{"--baseline", filepath.Join(dir, "missing.json")}, "missing.json: no such file"},
		{[]string{"--baseline", corrupt}, "baseline " + corrupt + ": not a baseline file: line 2: invalid character 'g'"},
		{[]string{"--baseline", newer}, "version 9"},
		{[]string{"--save-baseline", filepath.Join(dir, "no", "b.json")}, "cannot save baseline to " + filepath.Join(dir, "no", "b.json")},
		{[]string{"-port", "80", "-o", "top"}, "-o top needs a terminal"}, // stdout is /dev/null
	} {
		cmd := exec.Command(bin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want status 2", tc.args, err)
		}
		s := stderr.String()
		if !strings.HasPrefix(s, "acceptwatch: ") || strings.Count(s, "\n") != 1 || !strings.Contains(s, tc.want) {
			t.Errorf("%v: stderr %q, want one line naming %s", tc.args, s, tc.want)
		}
	}

	t.Run("unprivileged", func(t *testing.T) {
		requireRoot(t) // to switch to another user
		cmd := asNobody(t, "-port", "80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("unprivileged: exit %v, want status 1", err)
		}
		s := stderr.String()
		for _, frag := range []string{"CAP_BPF", "CAP_PERFMON", "sudo"} {
			if !strings.Contains(s, frag) {
				t.Errorf("unprivileged: stderr %q lacks %s", s, frag)
			}
		}
	})
}

// asNobody returns a command running acceptwatch with args as uid and gid
// 65534, from a copy that user can execute.
func asNobody(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	dir, err := os.MkdirTemp("", "acceptwatch-unpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	copyBin := filepath.Join(dir, "acceptwatch")
	b, err := os.ReadFile(acceptwatchBin(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyBin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copyBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// goBacklog is the backlog Go's net.Listen passes to listen(): somaxconn.
func goBacklog(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return min(n, 65535)
}

// TestMPTCP: an MPTCP client of an MPTCP listener (Go's default listener) is
// traced like a TCP one: the accept, the handshake and the listener's queue.
func TestMPTCP(t *testing.T) {
	watched := listen(t)
	p := start(t, "-port", strconv.Itoa(watched.port), "-o", "json")
	for i := 0; i < 2; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.12")}, Timeout: 10 * time.Second}
		d.SetMultipathTCP(true)
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(watched.port)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, c)
		c.Close()
	}
	watched.waitAccepted(t, 2)
	p.stop(os.Interrupt)
	events, sums := parseJSON(t, p.stdout.String())
	acc, hs := summaryCounts(finalSummary(t, sums))
	want := map[string]uint64{"127.0.0.12": 2}
	if !mapsEqual(acc, want) || !mapsEqual(hs, want) || len(events) != 2 {
		t.Errorf("%d events, accepted %v, handshakes %v; want 2 events and %v", len(events), acc, hs, want)
	}
	for _, e := range events {
		if e.BacklogMax == nil || int(*e.BacklogMax) != goBacklog(t) {
			t.Errorf("MPTCP accept without the listener's queue: %+v", e)
		}
		// The function hooks see the TCP subflow itself. Tracepoint mode
		// reaches it through the MPTCP socket's first subflow, which on 6.1
		// was once seen not to be the one that completed the handshake
		// (no wait, state not ESTABLISHED; 1 run in 3, never alone): known
		// limit, written in the README.
		if p.mode != "tracepoint" && (e.QueueWaitUs == nil || e.ClientGone) {
			t.Errorf("MPTCP accept without the queue wait, or flagged gone: %+v", e)
		}
	}
}
