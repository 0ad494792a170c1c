package main

// Snapshot tests: real sockets in every state the snapshot reports, checked
// against exact counts and against ss run at the same moment. They do not
// depend on the attach mode: the kernel matrix runs them (TestSnapshot*)
// in one cell per kernel (vmtest/cmd/matrix).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type snapStates struct {
	Total       uint64 `json:"total"`
	Established uint64 `json:"established"`
	SynRecv     uint64 `json:"syn_recv"`
	CloseWait   uint64 `json:"close_wait"`
	TimeWait    uint64 `json:"time_wait"`
	FinWait     uint64 `json:"fin_wait"`
	Other       uint64 `json:"other"`
}

type jsonSnapshot struct {
	Type        string            `json:"type"`
	Time        string            `json:"time"`
	NetNS       uint64            `json:"netns"`
	Ports       []string          `json:"ports"`
	Cgroup      string            `json:"cgroup"`
	Connections snapStates        `json:"connections"`
	States      map[string]uint64 `json:"states"`
	Findings    []string          `json:"findings"`
	Listeners   []struct {
		Port       int    `json:"port"`
		Listeners  int    `json:"listeners"`
		Queue      uint64 `json:"accept_queue"`
		QueueLimit uint64 `json:"accept_queue_limit"`
		QueueFull  bool   `json:"accept_queue_full"`
		snapStates
	} `json:"listeners"`
	Addresses []struct {
		Addr string `json:"addr"`
		snapStates
	} `json:"addresses"`
}

func (s jsonSnapshot) byAddr() map[string]snapStates {
	m := map[string]snapStates{}
	for _, a := range s.Addresses {
		m[a.Addr] = a.snapStates
	}
	return m
}

// snapshot runs acceptwatch --snapshot with args (-o json) and parses it.
func snapshot(t *testing.T, cmd *exec.Cmd) jsonSnapshot {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\nstderr: %s", cmd.Args, err, stderr.String())
	}
	var s jsonSnapshot
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	if s.Type != "snapshot" || s.NetNS == 0 {
		t.Fatalf("%v: type %q netns %d", cmd.Args, s.Type, s.NetNS)
	}
	if dec.More() {
		t.Fatalf("%v: more than one JSON object", cmd.Args)
	}
	return s
}

func snapCmd(t *testing.T, args ...string) *exec.Cmd {
	return exec.Command(acceptwatchBin(t), append([]string{"--snapshot", "-o", "json"}, args...)...)
}

// requireSS finds ss (iproute2), which the cross-checks run.
func requireSS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ss"); err == nil {
		return
	}
	if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
		t.Fatal("ss (iproute2) not found, and ACCEPTWATCH_NO_SKIP=1 forbids skipping")
	}
	t.Skip("needs ss from iproute2 for the cross-check")
}

// ssCounts runs ss for the same filter and counts its sockets per remote
// address (IPv4-mapped addresses unmapped) and state group.
func ssCounts(t *testing.T, filter string) map[string]snapStates {
	t.Helper()
	out, err := exec.Command("ss", "-Htan", filter).CombinedOutput()
	if err != nil {
		t.Fatalf("ss -Htan %q: %v: %s", filter, err, out)
	}
	m := map[string]snapStates{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[0] == "LISTEN" {
			continue
		}
		peer := f[4]
		i := strings.LastIndexByte(peer, ':')
		a, err := netip.ParseAddr(strings.Trim(peer[:i], "[]"))
		if err != nil {
			t.Fatalf("ss peer %q: %v", peer, err)
		}
		c := m[a.Unmap().String()]
		c.Total++
		switch f[0] {
		case "ESTAB":
			c.Established++
		case "SYN-RECV":
			c.SynRecv++
		case "CLOSE-WAIT":
			c.CloseWait++
		case "TIME-WAIT":
			c.TimeWait++
		case "FIN-WAIT-1", "FIN-WAIT-2":
			c.FinWait++
		default:
			c.Other++
		}
		m[a.Unmap().String()] = c
	}
	return m
}

// snapServer is a dual-stack listener (Go's default: MPTCP where the
// kernel has it) that accepts only when asked, and keeps what it accepted.
type snapServer struct {
	ln   net.Listener
	port int
}

func newSnapServer(t *testing.T) *snapServer {
	t.Helper()
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &snapServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
}

// connect dials n connections from src and accepts them (unless queued),
// all kept open until the test ends.
func (s *snapServer) connect(t *testing.T, src string, n int, accept bool) (clients, servers []net.Conn) {
	t.Helper()
	dst := "127.0.0.1"
	if strings.Contains(src, ":") {
		dst = "::1"
	}
	for i := 0; i < n; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort(dst, strconv.Itoa(s.port)))
		if err != nil {
			t.Fatalf("dial %s -> :%d: %v", src, s.port, err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
		if !accept {
			continue
		}
		sc, err := s.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		servers = append(servers, sc)
	}
	return clients, servers
}

// halfOpen starts a handshake from src whose SYN-ACKs XDP drops: the
// server keeps a SYN_RECV request socket, retransmitting.
func halfOpen(t *testing.T, src [4]byte, port int) {
	t.Helper()
	dropSynAcks(t, netip.PrefixFrom(netip.AddrFrom4(src), 32))
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: src}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil && err != syscall.EINPROGRESS {
		t.Fatal(err)
	}
}

// waitFor polls until cond holds (states change as segments cross lo).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSnapshot puts connections in every state on a watched dual-stack
// listener and others on an unwatched one, then checks the snapshot's
// exact counts, ss's view of the same sockets, an unprivileged run, the
// port and family filters, and the text layout.
func TestSnapshot(t *testing.T) {
	requireRoot(t) // XDP on lo for the half-open connection
	requireSS(t)
	watched, unwatched := newSnapServer(t), newSnapServer(t)

	watched.connect(t, "127.0.0.20", 2, true)
	watched.connect(t, "127.0.0.21", 3, true)
	watched.connect(t, "::1", 1, true)
	// CLOSE_WAIT: the clients close, the server keeps its sockets.
	cw, _ := watched.connect(t, "127.0.0.22", 2, true)
	for _, c := range cw {
		c.Close()
	}
	// TIME_WAIT on the server side: the server closes first, then the client.
	tc, ts := watched.connect(t, "127.0.0.23", 1, true)
	ts[0].Close()
	tc[0].SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, tc[0])
	tc[0].Close()
	// Queued, never accepted.
	watched.connect(t, "127.0.0.24", 2, false)
	halfOpen(t, [4]byte{127, 0, 0, 13}, watched.port)
	unwatched.connect(t, "127.0.0.26", 3, true)

	want := map[string]snapStates{
		"127.0.0.20": {Total: 2, Established: 2},
		"127.0.0.21": {Total: 3, Established: 3},
		"::1":        {Total: 1, Established: 1},
		"127.0.0.22": {Total: 2, CloseWait: 2},
		"127.0.0.23": {Total: 1, TimeWait: 1},
		"127.0.0.24": {Total: 2, Established: 2},
		"127.0.0.13": {Total: 1, SynRecv: 1},
	}
	port := strconv.Itoa(watched.port)
	var s jsonSnapshot
	waitFor(t, "the connections' states", func() bool {
		s = snapshot(t, snapCmd(t, "-port", port))
		return fmt.Sprint(s.byAddr()) == fmt.Sprint(want)
	})
	// ss, at the same moment, for the same filter.
	if got := ssCounts(t, "sport = :"+port); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ss sees %v, the snapshot %v", got, s.byAddr())
	}
	if s.Connections != (snapStates{Total: 12, Established: 8, SynRecv: 1, CloseWait: 2, TimeWait: 1}) {
		t.Errorf("totals %+v", s.Connections)
	}
	if s.States["ESTABLISHED"] != 8 || s.States["SYN_RECV"] != 1 || s.States["CLOSE_WAIT"] != 2 || s.States["TIME_WAIT"] != 1 {
		t.Errorf("states %v", s.States)
	}
	if len(s.Listeners) != 1 {
		t.Fatalf("listeners %+v, want port %s only", s.Listeners, port)
	}
	l := s.Listeners[0]
	if l.Port != watched.port || l.Listeners != 1 || l.Queue != 2 || l.QueueLimit != uint64(goBacklog(t)) || l.QueueFull || l.Total != 12 {
		t.Errorf("listener %+v, want port %s, 1 listener, queue 2/%d, 12 connections", l, port, goBacklog(t))
	}
	if !slices.Equal(s.Ports, []string{port}) || len(s.Findings) != 0 {
		t.Errorf("ports %v findings %q", s.Ports, s.Findings)
	}

	t.Run("unprivileged", func(t *testing.T) {
		u := snapshot(t, asNobody(t, "--snapshot", "-o", "json", "-port", port))
		if fmt.Sprint(u.byAddr()) != fmt.Sprint(want) || u.NetNS != s.NetNS || len(u.Listeners) != 1 || u.Listeners[0].Queue != 2 {
			t.Errorf("as uid 65534: %+v, want the same as root: %v", u, want)
		}
	})
	t.Run("all-ports", func(t *testing.T) {
		a := snapshot(t, snapCmd(t))
		got := a.byAddr()
		for addr, w := range want {
			if addr != "::1" && got[addr] != w { // ::1 may hold other listeners' connections
				t.Errorf("%s: %+v, want %+v", addr, got[addr], w)
			}
		}
		if got["127.0.0.26"] != (snapStates{Total: 3, Established: 3}) {
			t.Errorf("unwatched listener's clients without -port: %+v, want 3 established", got["127.0.0.26"])
		}
		if len(a.Ports) != 0 || len(a.Listeners) < 2 {
			t.Errorf("ports %v, listeners %+v", a.Ports, a.Listeners)
		}
	})
	t.Run("families", func(t *testing.T) {
		both := port + "," + strconv.Itoa(unwatched.port)
		v4 := snapshot(t, snapCmd(t, "-port", both, "-4")).byAddr()
		if _, ok := v4["::1"]; ok || v4["127.0.0.26"].Total != 3 || v4["127.0.0.22"].CloseWait != 2 {
			t.Errorf("-4: %v", v4)
		}
		v6 := snapshot(t, snapCmd(t, "-port", both, "-6")).byAddr()
		if len(v6) != 1 || v6["::1"].Established != 1 {
			t.Errorf("-6: %v, want ::1 only", v6)
		}
	})
	t.Run("text", func(t *testing.T) {
		out, err := exec.Command(acceptwatchBin(t), "--snapshot", "-port", port, "--top", "3", "--close-wait-threshold", "2").Output()
		if err != nil {
			t.Fatal(err)
		}
		text := string(out)
		for _, fields := range [][]string{
			{"REMOTE", "TOTAL", "ESTABLISHED", "SYN_RECV", "CLOSE_WAIT", "TIME_WAIT", "FIN_WAIT", "OTHER"},
			{"127.0.0.21", "3", "3", "0", "0", "0", "0", "0"},
			{"…", "and", "4", "more", "addresses", "(5", "connections)"},
			{"TOTAL", "12", "8", "1", "2", "1", "0", "0"},
			{"SYN_RECV", "1"},
			{port, "1", "12", "8", "1", "2", "1", "0", "0", "2/" + strconv.Itoa(goBacklog(t))},
		} {
			if !containsFields(text, fields...) {
				t.Errorf("no line %q in:\n%s", fields, text)
			}
		}
		if !strings.Contains(text, "finding: port "+port+": 2 connections in CLOSE_WAIT") ||
			!strings.Contains(text, fmt.Sprintf("netns %d ---", s.NetNS)) {
			t.Errorf("no CLOSE_WAIT finding or netns in:\n%s", text)
		}
	})
}

// TestSnapshotQueueFull: a backlog-1 listener holding two connections it
// has not accepted is full now (the kernel takes one more than the limit).
func TestSnapshotQueueFull(t *testing.T) {
	_, port := rawListener(t, 1)
	connectN(t, "127.0.0.27", port, 2)
	var s jsonSnapshot
	waitFor(t, "two queued connections", func() bool {
		s = snapshot(t, snapCmd(t, "-port", strconv.Itoa(port)))
		return len(s.Listeners) == 1 && s.Listeners[0].Queue == 2
	})
	if l := s.Listeners[0]; l.QueueLimit != 1 || !l.QueueFull || s.byAddr()["127.0.0.27"].Established != 2 {
		t.Errorf("listener %+v, addresses %v; want 2/1 and full", l, s.byAddr())
	}
	if len(s.Findings) != 1 || !strings.Contains(s.Findings[0], "accept queue full now (2/1)") {
		t.Errorf("findings %q", s.Findings)
	}
}

// TestSnapshotErrors: flags that make no sense with --snapshot (or only
// with it) are usage errors.
func TestSnapshotErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--snapshot", "-q"},
		{"--snapshot", "--duration", "1s"},
		{"--snapshot", "--attach", "fexit"},
		{"--snapshot", "-i", "1s"},
		{"--snapshot", "--count", "3"},
		{"--snapshot", "--syn-recv-share", "101"},
		{"--snapshot", "-port", "0"},
		{"--address-share", "10"},
	} {
		cmd := exec.Command(acceptwatchBin(t), args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Count(stderr.String(), "\n") != 1 ||
			!strings.HasPrefix(stderr.String(), "acceptwatch: ") {
			t.Errorf("%v: %v, stderr %q; want exit 2 and one line", args, err, stderr.String())
		}
	}
	// A dump that fails (here: no file descriptor left for the netlink
	// socket) is one line and exit 1. The limit is set by sh, so this
	// runs where there is one (not in the kernel matrix's initramfs). sh
	// first closes what an outer runner may have left open (flock's lock
	// file takes fd 3), so that the 4 descriptors mean the same everywhere.
	if sh, err := exec.LookPath("sh"); err == nil {
		cmd := exec.Command(sh, "-c", "exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-; ulimit -n 4; exec \"$0\" --snapshot", acceptwatchBin(t))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Count(stderr.String(), "\n") != 1 ||
			!strings.HasPrefix(stderr.String(), "acceptwatch: snapshot: ") {
			t.Errorf("failed dump: %v, stderr %q; want exit 1 and one line", err, stderr.String())
		}
	}
}

// TestTraceNow: the tracing summary's OPEN and SYN_RECV columns and its
// state counts come from a snapshot taken when it is printed.
func TestTraceNow(t *testing.T) {
	requireRoot(t)
	srv := newSnapServer(t)
	port := strconv.Itoa(srv.port)
	p := start(t, "-port", port, "-o", "json", "-q", "--interval", "1s")
	srv.connect(t, "127.0.0.30", 2, true)
	srv.connect(t, "::1", 1, true)
	tc, ts := srv.connect(t, "127.0.0.31", 1, true)
	ts[0].Close() // server first: its side ends in TIME_WAIT
	io.Copy(io.Discard, tc[0])
	tc[0].Close()
	halfOpen(t, [4]byte{127, 0, 0, 13}, srv.port)
	want := map[string]snapStates{
		"127.0.0.30": {Total: 2, Established: 2}, "::1": {Total: 1, Established: 1},
		"127.0.0.31": {Total: 1, TimeWait: 1}, "127.0.0.13": {Total: 1, SynRecv: 1},
	}
	waitFor(t, "the connections' states", func() bool {
		return fmt.Sprint(snapshot(t, snapCmd(t, "-port", port)).byAddr()) == fmt.Sprint(want)
	})
	p.stop(os.Interrupt)

	_, sums := parseJSON(t, p.stdout.String())
	s := finalSummary(t, sums)
	for _, w := range sums {
		if w.ConnectionsNow == nil || w.NetNS == nil {
			t.Errorf("summary (final %v) without connections_now", w.Final)
		}
	}
	if c := s.ConnectionsNow; c == nil || *c != (snapStates{Total: 5, Established: 3, SynRecv: 1, TimeWait: 1}) {
		t.Fatalf("connections_now %+v, want 3 established, 1 SYN_RECV, 1 TIME_WAIT", c)
	}
	got := map[string]string{}
	for _, a := range s.Addresses {
		if a.Open == nil || a.SynRecv == nil {
			t.Fatalf("address %s without open/syn_recv", a.Addr)
		}
		got[a.Addr] = fmt.Sprintf("accepted %d open %d syn_recv %d", a.Accepted, *a.Open, *a.SynRecv)
	}
	wantRows := map[string]string{
		"127.0.0.30": "accepted 2 open 2 syn_recv 0",
		"::1":        "accepted 1 open 1 syn_recv 0",
		"127.0.0.31": "accepted 1 open 0 syn_recv 0",
		"127.0.0.13": "accepted 0 open 0 syn_recv 1",
	}
	if fmt.Sprint(got) != fmt.Sprint(wantRows) {
		t.Errorf("summary rows %v, want %v", got, wantRows)
	}
}
