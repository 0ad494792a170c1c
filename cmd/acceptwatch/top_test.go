package main

// Tests of the live table (-o top).
//
// TestTopFrames runs everywhere, the kernel matrix included: the real tracer
// feeds the real model, rendered to text. TestTopTmux* drive the binary in a
// real terminal (tmux): they are host tests, because the VM guest is a static
// initramfs without tmux (the matrix skips them by name, see
// vmtest/cmd/matrix); the data path they show is the one TestTopFrames checks
// in every kernel and attach mode.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/acceptwatch/acceptwatch/report"
	"github.com/acceptwatch/acceptwatch/report/top"
	"github.com/acceptwatch/acceptwatch/tracer"
)

// table is one table of a screen: its header's fields and its rows, by first cell.
type table struct {
	header []string
	order  []string            // first cells, top to bottom
	rows   map[string][]string // fields by first cell
}

// cell is row's value in column name ("" when either is missing).
func (tb table) cell(row, name string) string {
	i := slices.Index(tb.header, name)
	r := tb.rows[row]
	if i < 0 || i >= len(r) {
		return ""
	}
	return r[i]
}

// parseTable finds the table whose header starts with first and reads its
// rows up to the first line that is not one. Every row must have as many
// fields as the header: the table is well-formed.
func parseTable(t *testing.T, screen, first string, rowRe *regexp.Regexp) table {
	t.Helper()
	tb := table{rows: map[string][]string{}}
	lines := strings.Split(screen, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != first {
			continue
		}
		if first == "ACCEPTS" {
			f = append([]string{""}, f...) // the header's grid: row names have no header
		}
		tb.header = f
		for _, r := range lines[i+1:] {
			rf := strings.Fields(r)
			if len(rf) == 0 || !rowRe.MatchString(rf[0]) {
				break
			}
			if len(rf) != len(f) {
				t.Errorf("row %q has %d fields, its header %q has %d", r, len(rf), l, len(f))
			}
			tb.order = append(tb.order, rf[0])
			tb.rows[rf[0]] = rf
		}
		break
	}
	return tb
}

var (
	addrRe = regexp.MustCompile(`^[0-9a-f.:]+$`)
	portRe = regexp.MustCompile(`^[0-9]+$`)
)

// dialFrom connects from src to 127.0.0.1:port and closes.
func dialFrom(src string, port int) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return c.Close()
}

// TestTopFrames: the tracer's counters and the socket snapshot through the
// live table's source and model, drawn at 120x40: the busiest address first
// with its exact counts, the port rows, the header's totals, connections
// open now and a listener's queue now; then a newly busy address moves to
// the top, s sorts by ACCEPTED, then by OPEN, and g shows the network.
func TestTopFrames(t *testing.T) {
	requireRoot(t)
	srv := listen(t)
	// A listener that never accepts: 127.0.0.5's connections stay in its
	// queue, established (OPEN) and counted in BACKLOG_NOW.
	_, held := rawListener(t, 16)
	// Flood thresholds this small traffic reaches: 127.0.0.2 is a finding.
	o, _, err := parseFlags([]string{"-o", "top", "--attach", attachMode(), "-port", fmt.Sprintf("%d,%d", srv.port, held),
		"--flood-min", "10", "--flood-factor", "2"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracer.Open(tracer.Config{Attach: o.attach, Ports: o.portList})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	l := &loop{o: o, t: tr, now: openConnectionsNow("")}
	defer l.now.Close()
	if l.now.err != nil {
		t.Fatalf("no socket snapshot for OPEN: %v", l.now.err)
	}
	src := newTopSource(l)
	m := top.New(src, top.Options{Mode: tr.Mode(), Ports: o.portsLabel(), Refresh: o.refresh, Start: tr.Started(), Styles: top.PlainStyles()})
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})

	want := map[string]int{"127.0.0.2": 12, "127.0.0.3": 5, "127.0.0.4": 2}
	for _, a := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		dial(t, a, "127.0.0.1", srv.port, want[a])
	}
	srv.waitAccepted(t, 19)
	connectN(t, "127.0.0.5", held, 3)
	_, tick := m.Update(m.Init()())
	screen := m.View()
	t.Logf("first refresh:\n%s", screen)

	title := strings.SplitN(screen, "\n", 2)[0]
	if !strings.HasPrefix(title, "acceptwatch ") || !strings.Contains(title, tr.Mode()) ||
		!strings.Contains(title, " port ") || !strings.Contains(title, strconv.Itoa(srv.port)) || !strings.Contains(title, strconv.Itoa(held)) {
		t.Errorf("title lacks the mode or the ports: %q", title)
	}
	hdr := parseTable(t, screen, "ACCEPTS", regexp.MustCompile(`^(total|/s)$`))
	if hdr.cell("total", "ACCEPTS") != "19" || hdr.cell("total", "HANDSHAKES") != "22" {
		t.Errorf("header totals: %v", hdr.rows["total"])
	}
	// The findings compare each address with all the others.
	if !regexp.MustCompile(`(?m)^finding: 127\.0\.0\.2: 12 .*far more than the other addresses`).MatchString(screen) {
		t.Errorf("no flood finding for 127.0.0.2 (12 connections, the others 5, 2 and 0)")
	}
	ports := parseTable(t, screen, "PORT", portRe)
	if got := ports.cell(strconv.Itoa(srv.port), "ACCEPTED"); got != "19" {
		t.Errorf("port row: ACCEPTED %q, want 19 (%v)", got, ports.rows)
	}
	if got := ports.cell(strconv.Itoa(held), "BACKLOG_NOW"); got != "3/16" {
		t.Errorf("port %d: BACKLOG_NOW %q, want 3/16 (%v)", held, got, ports.rows)
	}
	addrs := parseTable(t, screen, "REMOTE", addrRe)
	if !slices.Equal(addrs.order, []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}) {
		t.Errorf("rows %v, want the busiest first", addrs.order)
	}
	if addrs.cell("127.0.0.5", "OPEN") != "3" || addrs.cell("127.0.0.5", "ACCEPTED") != "0" || addrs.cell("127.0.0.5", "HANDSHAKES") != "3" {
		t.Errorf("127.0.0.5 (3 connections queued, none accepted): %v", addrs.rows["127.0.0.5"])
	}
	for a, n := range want {
		if got := addrs.cell(a, "ACCEPTED"); got != strconv.Itoa(n) {
			t.Errorf("%s: ACCEPTED %s, want %d", a, got, n)
		}
		if got := addrs.cell(a, "HANDSHAKES"); got != strconv.Itoa(n) {
			t.Errorf("%s: HANDSHAKES %s, want %d", a, got, n)
		}
		syns := addrs.cell(a, "SYNS")
		if tr.SynCounter() != "" {
			if v, err := strconv.Atoi(syns); err != nil || v < n {
				t.Errorf("%s: SYNS %q with SYNs counted, want at least %d", a, syns, n)
			}
		} else if syns != "-" {
			t.Errorf("%s: SYNS %q where %s mode counts none, want -", a, syns, tr.Mode())
		}
	}

	// WAIT_P99 reads as in the summary: the range the percentile lies in,
	// from the same buckets, per address and per port.
	c, err := tr.Total()
	if err != nil {
		t.Fatal(err)
	}
	waitCell := func(w report.Wait) string {
		if w.Count == 0 {
			return "-"
		}
		return report.FormatQuantile(w.P99)
	}
	for _, a := range c.Addresses {
		if _, ok := want[a.Addr.String()]; ok {
			if got, w := addrs.cell(a.Addr.String(), "WAIT_P99"), waitCell(a.Wait); got != w {
				t.Errorf("%s: WAIT_P99 %q, the summary's p99 %q", a.Addr, got, w)
			}
		}
	}
	for _, p := range c.Listeners {
		if p.Port == uint16(srv.port) {
			if got, w := ports.cell(strconv.Itoa(srv.port), "WAIT_P99"), waitCell(p.Wait); got != w || w == "-" {
				t.Errorf("port %d: WAIT_P99 %q, the summary's p99 %q", p.Port, got, w)
			}
		}
	}

	// 127.0.0.4 is now the one connecting: first by rate at the next refresh.
	dial(t, "127.0.0.4", "127.0.0.1", srv.port, 8)
	srv.waitAccepted(t, 27)
	_, refresh := m.Update(tick())
	m.Update(refresh())
	screen = m.View()
	t.Logf("second refresh:\n%s", screen)
	addrs = parseTable(t, screen, "REMOTE", addrRe)
	if len(addrs.order) != 4 || addrs.order[0] != "127.0.0.4" || addrs.cell("127.0.0.4", "ACCEPTED") != "10" {
		t.Errorf("after 8 more from 127.0.0.4: rows %v, want 127.0.0.4 first with 10", addrs.order)
	}
	if r := addrs.cell("127.0.0.4", "RATE/s"); r == "0" || addrs.cell("127.0.0.2", "RATE/s") != "0" {
		t.Errorf("RATE/s: 127.0.0.4 %s, 127.0.0.2 %s", r, addrs.cell("127.0.0.2", "RATE/s"))
	}

	_, redraw := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("s")})
	m.Update(redraw())
	screen = m.View()
	addrs = parseTable(t, screen, "REMOTE", addrRe)
	if !slices.Equal(addrs.order, []string{"127.0.0.2", "127.0.0.4", "127.0.0.3", "127.0.0.5"}) || !strings.Contains(screen, "sort: ACCEPTED") {
		t.Errorf("after s: rows %v, want by ACCEPTED\n%s", addrs.order, screen)
	}
	// On to OPEN (after SYNS where counted, HANDSHAKES, NOT_ACC, SYNACK_RT).
	for i := 0; i < 10 && !strings.Contains(m.View(), "sort: OPEN"); i++ {
		_, redraw = m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("s")})
	}
	m.Update(redraw())
	screen = m.View()
	addrs = parseTable(t, screen, "REMOTE", addrRe)
	if !strings.Contains(screen, "sort: OPEN") || len(addrs.order) == 0 || addrs.order[0] != "127.0.0.5" {
		t.Errorf("sorted by OPEN: rows %v\n%s", addrs.order, screen)
	}

	// g: one row for 127.0.0.0/24 with the four addresses' sums.
	_, redraw = m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("g")})
	m.Update(redraw())
	screen = m.View()
	t.Logf("per network:\n%s", screen)
	nets := parseTable(t, screen, "PREFIX", regexp.MustCompile(`/[0-9]+$`))
	want24 := map[string]string{"ADDRS": "4", "ACCEPTED": "27", "HANDSHAKES": "30", "OPEN": "3"}
	if len(nets.order) != 1 || nets.order[0] != "127.0.0.0/24" {
		t.Fatalf("per network: rows %v", nets.order)
	}
	for col, v := range want24 {
		if got := nets.cell("127.0.0.0/24", col); got != v {
			t.Errorf("127.0.0.0/24: %s %q, want %s", col, got, v)
		}
	}
}

// tmux is a tmux server of the test's own (its own socket).
type tmux struct {
	t    *testing.T
	sock string
}

// startTmux runs command in a detached w x h session.
func startTmux(t *testing.T, w, h int, env []string, command string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("ACCEPTWATCH_NO_SKIP") == "1" {
			t.Fatal("tmux is not installed (make deps installs it)")
		}
		t.Skip("tmux is not installed: apt-get install tmux (make test installs it)")
	}
	tm := &tmux{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	// CI=true as CI runs set it: the pane is the same everywhere, and a
	// real terminal must keep its colours under it.
	args := []string{"new-session", "-d", "-s", "aw", "-x", strconv.Itoa(w), "-y", strconv.Itoa(h), "-e", "CI=true"}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	tm.run(append(args, command)...)
	t.Cleanup(func() { exec.Command("tmux", "-S", tm.sock, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tm.sock}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// capture is the screen as text; with escapes, its colours and attributes too.
func (tm *tmux) capture(escapes bool) string {
	tm.t.Helper()
	args := []string{"capture-pane", "-p", "-t", "aw"}
	if escapes {
		args = append(args, "-e")
	}
	return strings.TrimRight(tm.run(args...), "\n")
}

// waitScreen captures until ok holds, for up to 20 s.
func (tm *tmux) waitScreen(what string, ok func(string) bool) string {
	tm.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := tm.capture(false)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("screen never showed %s; last screen:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (tm *tmux) format(f string) string {
	tm.t.Helper()
	return strings.TrimSpace(tm.run("display-message", "-p", "-t", "aw", f))
}

// startTop runs acceptwatch -o top under tmux, then "EXIT=<status>", and
// waits until it traces.
func startTop(t *testing.T, w, h int, env []string, args ...string) *tmux {
	t.Helper()
	requireRoot(t)
	ready := filepath.Join(t.TempDir(), "ready")
	args = append([]string{acceptwatchBin(t), "--attach", attachMode(), "--ready-file", ready, "-o", "top"}, args...)
	tm := startTmux(t, w, h, env, strings.Join(args, " ")+"; echo EXIT=$?; sleep 600")
	waitFile(t, ready)
	return tm
}

// rates dials from each address at its rate until stop is closed, counting
// the connections made.
func rates(t *testing.T, port int, perSec map[string]int, stop chan struct{}) (map[string]*atomic.Int64, *sync.WaitGroup) {
	counts := map[string]*atomic.Int64{}
	var wg sync.WaitGroup
	for a, r := range perSec {
		counts[a] = &atomic.Int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / time.Duration(r))
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if err := dialFrom(a, port); err != nil {
						t.Errorf("dial from %s: %v", a, err)
						return
					}
					counts[a].Add(1)
				}
			}
		}()
	}
	return counts, &wg
}

// TestTopTmux: acceptwatch -o top in a real 120x40 terminal with traffic
// from three addresses: the header, the port row, the busiest address now
// first; s sorts by ACCEPTED (the busiest overall first, exact counts); a
// resize to 80x24 keeps every row well-formed; q prints the normal summary
// on a restored terminal.
func TestTopTmux(t *testing.T) {
	srv := listen(t)
	port := strconv.Itoa(srv.port)
	tm := startTop(t, 120, 40, nil, "-port", port)

	// 127.0.0.2 connected a lot, then stopped; .3 and .4 connect now, .3
	// five times as often (and stop before they come near .2's count).
	const busy = 400
	dial(t, "127.0.0.2", "127.0.0.1", srv.port, busy)
	stop := make(chan struct{})
	counts, wg := rates(t, srv.port, map[string]int{"127.0.0.3": 20, "127.0.0.4": 4}, stop)
	stopped := false
	stopTraffic := func() {
		if !stopped {
			close(stop)
			wg.Wait()
			stopped = true
		}
	}
	defer stopTraffic()

	screen := tm.waitScreen("127.0.0.3 first by RATE/s", func(s string) bool {
		a := parseTable(t, s, "REMOTE", addrRe)
		return len(a.order) == 3 && a.order[0] == "127.0.0.3" && a.cell("127.0.0.2", "RATE/s") == "0"
	})
	t.Logf("by rate:\n%s", screen)
	lines := strings.Split(screen, "\n")
	if !strings.HasPrefix(lines[0], "acceptwatch ") || !strings.Contains(lines[0], "port "+port) || !strings.Contains(lines[0], "3 addresses") {
		t.Errorf("title: %q", lines[0])
	}
	hdr := parseTable(t, screen, "ACCEPTS", regexp.MustCompile(`^(total|/s)$`))
	stopTraffic()
	if n, err := strconv.Atoi(hdr.cell("total", "ACCEPTS")); err != nil || n < busy || hdr.cell("/s", "ACCEPTS") == "0" {
		t.Errorf("header: total %v, /s %v", hdr.rows["total"], hdr.rows["/s"])
	}
	if !strings.Contains(screen, "accepts/s ") {
		t.Errorf("no sparkline")
	}
	ports := parseTable(t, screen, "PORT", portRe)
	if len(ports.order) != 1 || ports.order[0] != port || ports.cell(port, "RATE/s") == "0" ||
		!regexp.MustCompile(fmt.Sprintf(`^[0-9]+/%d$`, goBacklog(t))).MatchString(ports.cell(port, "BACKLOG_NOW")) {
		t.Errorf("port rows %v", ports.rows)
	}
	if !strings.HasPrefix(lines[len(lines)-1], "q quit  s sort: RATE/s") {
		t.Errorf("key line: %q", lines[len(lines)-1])
	}
	colour := tm.capture(true)
	if !strings.Contains(colour, "\x1b[") {
		t.Errorf("no highlight at all on a colour terminal")
	}

	tm.run("send-keys", "-t", "aw", "s")
	screen = tm.waitScreen("the ACCEPTED order", func(s string) bool {
		a := parseTable(t, s, "REMOTE", addrRe)
		return strings.Contains(s, "sort: ACCEPTED") && len(a.order) == 3 && a.order[0] == "127.0.0.2"
	})
	if a := parseTable(t, screen, "REMOTE", addrRe); a.cell("127.0.0.2", "ACCEPTED") != strconv.Itoa(busy) {
		t.Errorf("127.0.0.2 made %d connections, screen says %q:\n%s", busy, a.cell("127.0.0.2", "ACCEPTED"), screen)
	}

	total := busy + int(counts["127.0.0.3"].Load()+counts["127.0.0.4"].Load())
	srv.waitAccepted(t, total)
	want := map[string]string{"127.0.0.2": strconv.Itoa(busy), "127.0.0.3": strconv.FormatInt(counts["127.0.0.3"].Load(), 10),
		"127.0.0.4": strconv.FormatInt(counts["127.0.0.4"].Load(), 10)}
	screen = tm.waitScreen("exact counts once the traffic stopped", func(s string) bool {
		a := parseTable(t, s, "REMOTE", addrRe)
		for k, v := range want {
			if a.cell(k, "ACCEPTED") != v {
				return false
			}
		}
		return true
	})
	t.Logf("by ACCEPTED, traffic over:\n%s", screen)

	tm.run("resize-window", "-t", "aw", "-x", "80", "-y", "24")
	screen = tm.waitScreen("an 80x24 screen", func(s string) bool {
		l := strings.Split(s, "\n")
		return len(l) == 24 && strings.HasPrefix(l[0], "acceptwatch ") && strings.HasPrefix(l[23], "q quit")
	})
	t.Logf("80x24:\n%s", screen)
	lines = strings.Split(screen, "\n")
	if !strings.HasPrefix(lines[0], "acceptwatch ") {
		t.Errorf("80x24: title %q", lines[0])
	}
	for i, l := range lines {
		if n := len([]rune(l)); n > 80 {
			t.Errorf("80x24: line %d is %d wide", i, n)
		}
	}
	a := parseTable(t, screen, "REMOTE", addrRe)
	if len(a.order) != 3 || a.order[0] != "127.0.0.2" || a.cell("127.0.0.2", "ACCEPTED") != strconv.Itoa(busy) ||
		!slices.Contains(a.header, "RATE/s") {
		t.Errorf("80x24: address table %v %v", a.header, a.rows)
	}
	if p := parseTable(t, screen, "PORT", portRe); len(p.order) != 1 {
		t.Errorf("80x24: port rows %v", p.rows)
	}

	tm.run("send-keys", "-t", "aw", "q")
	screen = tm.waitScreen("the summary after q", func(s string) bool { return strings.Contains(s, "EXIT=") })
	t.Logf("after q:\n%s", screen)
	if !strings.Contains(screen, "EXIT=0") || !strings.Contains(screen, "--- acceptwatch summary") {
		t.Errorf("q did not end with the summary and status 0")
	}
	if !regexp.MustCompile(`(?m)^127\.0\.0\.2 +400 +400 `).MatchString(screen) {
		t.Errorf("summary lacks 127.0.0.2 with %d accepted and as many handshakes", busy)
	}
	checkRestored(t, tm)
}

// checkRestored: the normal screen is back, with its cursor, and the table
// was drawn on the alternate screen (none of it is left on the normal one).
func checkRestored(t *testing.T, tm *tmux) {
	t.Helper()
	if alt := tm.format("#{alternate_on}"); alt != "0" {
		t.Errorf("alternate screen still on after exit (alternate_on %q)", alt)
	}
	if c := tm.format("#{cursor_flag}"); c != "1" {
		t.Errorf("cursor still hidden after exit (cursor_flag %q)", c)
	}
	if s := tm.capture(false); strings.Contains(s, "q quit  s sort") {
		t.Errorf("the table was left on the normal screen:\n%s", s)
	}
}

// TestTopTmuxSignals: SIGTERM and --duration end like q; NO_COLOR leaves
// no colour.
func TestTopTmuxSignals(t *testing.T) {
	srv := listen(t)
	port := strconv.Itoa(srv.port)

	t.Run("SIGTERM and NO_COLOR", func(t *testing.T) {
		tm := startTop(t, 100, 30, []string{"NO_COLOR=1"}, "-port", port)
		dial(t, "127.0.0.5", "127.0.0.1", srv.port, 3)
		tm.waitScreen("127.0.0.5", func(s string) bool {
			return parseTable(t, s, "REMOTE", addrRe).cell("127.0.0.5", "ACCEPTED") == "3"
		})
		esc := tm.capture(true)
		if regexp.MustCompile("\x1b\\[[0-9;]*(3[0-7]|9[0-7]|38;)").MatchString(esc) {
			t.Errorf("colours with NO_COLOR set:\n%q", esc)
		}
		if !strings.Contains(esc, "\x1b[1m") && !strings.Contains(esc, "\x1b[7m") {
			t.Errorf("no bold or reverse with NO_COLOR (attributes are not colours):\n%q", esc)
		}
		pid := childOf(t, tm.format("#{pane_pid}"))
		if err := exec.Command("kill", "-TERM", pid).Run(); err != nil {
			t.Fatal(err)
		}
		screen := tm.waitScreen("the summary after SIGTERM", func(s string) bool { return strings.Contains(s, "EXIT=") })
		if !strings.Contains(screen, "EXIT=0") || !regexp.MustCompile(`(?m)^127\.0\.0\.5 +3 +3 `).MatchString(screen) {
			t.Errorf("SIGTERM did not end with the summary and status 0:\n%s", screen)
		}
		checkRestored(t, tm)
	})

	t.Run("duration", func(t *testing.T) {
		tm := startTop(t, 100, 30, nil, "-port", port, "--duration", "2s")
		screen := tm.waitScreen("the summary after --duration", func(s string) bool { return strings.Contains(s, "EXIT=") })
		if !strings.Contains(screen, "EXIT=0") || !strings.Contains(screen, "--- acceptwatch summary") {
			t.Errorf("--duration did not end with the summary and status 0:\n%s", screen)
		}
		if !regexp.MustCompile(`--- acceptwatch summary: .* \(2\.[0-2]s\)`).MatchString(screen) {
			t.Errorf("--duration 2s: the summary does not cover 2s of tracing:\n%s", screen)
		}
		checkRestored(t, tm)
	})
}

// childOf is the one child process of pid (the shell's acceptwatch).
func childOf(t *testing.T, pid string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/task/%s/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("process %s has children %q, want one", pid, f)
	}
	return f[0]
}

// Every port counter reaches its row, and ports named with -port have a row
// before their first connection.
func TestTopPortRows(t *testing.T) {
	o, _, err := parseFlags([]string{"-o", "top", "-port", "80,443"})
	if err != nil {
		t.Fatal(err)
	}
	s := &topSource{o: o}
	w := report.Wait{Count: 3, P99: report.Quantile{Lo: time.Millisecond, Hi: 2 * time.Millisecond}}
	got := s.ports([]report.PortStats{{Port: 443, Accepted: 5, NotAccepted: 1, SynackRetrans: 2, Syns: 9, Drops: 6,
		BacklogMax: 3, BacklogLimit: 4, Wait: w}})
	want := []top.Port{{Port: 80}, {Port: 443, Accepted: 5, NotAccepted: 1, SynackRetrans: 2, Drops: 6,
		BacklogMax: 3, BacklogLimit: 4, WaitP99: w.P99, HasWait: true}}
	if !slices.Equal(got, want) {
		t.Errorf("port rows\n%+v, want\n%+v", got, want)
	}
}

// TestTopAddressRowLabels: address rows name their namespace when the
// frame has rows of several (by port rows or by the rows themselves), and
// keep their plain address otherwise.
func TestTopAddressRowLabels(t *testing.T) {
	a := netip.MustParseAddr("127.0.0.2")
	one := &top.Frame{Rows: []top.Row{{Addr: a, NetNS: 7}, {Addr: netip.MustParseAddr("127.0.0.3"), NetNS: 7}}}
	labelRows(one)
	if one.Rows[0].Label() != "127.0.0.2" || one.Rows[1].Label() != "127.0.0.3" {
		t.Errorf("one namespace: %q %q, want the addresses alone", one.Rows[0].Label(), one.Rows[1].Label())
	}
	two := &top.Frame{Rows: []top.Row{{Addr: a, NetNS: 7}, {Addr: a, NetNS: 9}}}
	labelRows(two)
	if two.Rows[0].Label() == two.Rows[1].Label() || !strings.HasPrefix(two.Rows[1].Label(), "127.0.0.2 ") {
		t.Errorf("two namespaces: %q and %q, want the address and each one's namespace", two.Rows[0].Label(), two.Rows[1].Label())
	}
	byPorts := &top.Frame{Rows: []top.Row{{Addr: a, NetNS: 9}}, Ports: []top.Port{{Port: 80, NetNSLabel: "host"}, {Port: 80, NetNSLabel: "web"}}}
	labelRows(byPorts)
	if !strings.HasPrefix(byPorts.Rows[0].Label(), "127.0.0.2 ") {
		t.Errorf("namespaces in the port rows: %q", byPorts.Rows[0].Label())
	}
}

// TestLiveAcrossSwaps: the live reader stays exact when the address maps
// take turns (Config.AddressWindows, swapped and drained as the exporter
// does): an address's accepts since the start and since the previous read
// are neither lost nor counted twice, whether one swap falls between two
// reads or several do, or swaps run all the while beside reads and traffic
// (then the address side must add up to the port counters, which are never
// swapped); the final summary's counts too, and what the drains hand over
// adds up to the same.
func TestLiveAcrossSwaps(t *testing.T) {
	requireRoot(t)
	srv := listen(t)
	tr, err := tracer.Open(tracer.Config{Attach: attachMode(), Ports: []uint16{uint16(srv.port)}, AddressWindows: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	live := tr.Live()
	var mu sync.Mutex
	drained := map[string]uint64{}
	rotate := func() {
		err := tr.RotateAddresses(func(c tracer.AddressCounts) {
			mu.Lock()
			drained[c.Addr.String()] += c.Accepted
			mu.Unlock()
		})
		if err != nil {
			t.Error(err)
		}
	}
	type row struct{ accepted, gained uint64 }
	gained := map[string]uint64{} // the sum of every read's gains
	read := func() (map[string]row, tracer.LiveTotals) {
		t.Helper()
		rows := map[string]row{}
		tot, err := live.Read(true, func(a *tracer.AddrSample) {
			k := a.Addr().String()
			if _, dup := rows[k]; dup {
				t.Errorf("%s visited twice in one read", k)
			}
			rows[k] = row{a.Accepted, a.NewAccepted}
			gained[k] += a.NewAccepted
		})
		if err != nil {
			t.Fatal(err)
		}
		return rows, tot
	}
	check := func(when string, want map[string]row, total uint64) {
		t.Helper()
		rows, tot := read()
		for a, w := range want {
			if rows[a] != w {
				t.Errorf("%s: %s accepted %d (+%d), want %d (+%d)", when, a, rows[a].accepted, rows[a].gained, w.accepted, w.gained)
			}
		}
		if tot.TotalAccepted != total || tot.AddressCount != len(want) {
			t.Errorf("%s: %d accepted from %d addresses, want %d from %d", when, tot.TotalAccepted, tot.AddressCount, total, len(want))
		}
	}

	dial(t, "127.0.0.2", "127.0.0.1", srv.port, 5)
	dial(t, "127.0.0.3", "127.0.0.1", srv.port, 3)
	srv.waitAccepted(t, 8)
	check("before any swap", map[string]row{"127.0.0.2": {5, 5}, "127.0.0.3": {3, 3}}, 8)
	dial(t, "127.0.0.2", "127.0.0.1", srv.port, 4)
	srv.waitAccepted(t, 12)
	rotate()
	dial(t, "127.0.0.2", "127.0.0.1", srv.port, 2)
	dial(t, "127.0.0.4", "127.0.0.1", srv.port, 1)
	srv.waitAccepted(t, 15)
	check("a swap between two reads", map[string]row{"127.0.0.2": {11, 6}, "127.0.0.3": {3, 0}, "127.0.0.4": {1, 1}}, 15)
	rotate()
	rotate()
	check("two swaps, no traffic", map[string]row{"127.0.0.2": {11, 0}, "127.0.0.3": {3, 0}, "127.0.0.4": {1, 0}}, 15)

	// Swaps every 2 ms while five addresses connect and the reader reads.
	stop := make(chan struct{})
	var swaps sync.WaitGroup
	swaps.Add(1)
	go func() {
		defer swaps.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				rotate()
			}
		}
	}()
	var traffic sync.WaitGroup
	const each = 200
	for i := 5; i < 10; i++ {
		traffic.Add(1)
		go func() {
			defer traffic.Done()
			for range each {
				if err := dialFrom(fmt.Sprintf("127.0.0.%d", i), srv.port); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { traffic.Wait(); close(done) }()
	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		case <-time.After(10 * time.Millisecond):
			read()
		}
	}
	srv.waitAccepted(t, 15+5*each)
	close(stop)
	swaps.Wait()
	rows, tot := read()
	// The port counters are never swapped: the address side must add up
	// to them. Runs the kernel skipped (kretprobe mode under QEMU skips a
	// few while another BPF program runs on the CPU) are missing from
	// both, and counted.
	var portAcc uint64
	for _, p := range tot.Listeners {
		portAcc += p.Accepted
	}
	t.Logf("%d swaps; the kernel skipped %d hook runs; %d accepts counted of %d", tr.AddressRotations(), tot.MissedRuns, tot.TotalAccepted, 15+5*each)
	if tot.TotalAccepted != portAcc || tot.AddressOverflow != 0 {
		t.Errorf("after swaps under traffic: %d accepts per address (%d overflow), %d per port", tot.TotalAccepted, tot.AddressOverflow, portAcc)
	}
	if tot.TotalAccepted > 15+5*each || tot.TotalAccepted+tot.MissedRuns < 15+5*each {
		t.Errorf("after swaps under traffic: %d accepts counted, %d made, %d hook runs skipped", tot.TotalAccepted, 15+5*each, tot.MissedRuns)
	}
	want := map[string]uint64{"127.0.0.2": 11, "127.0.0.3": 3, "127.0.0.4": 1}
	for i := 5; i < 10; i++ {
		a := fmt.Sprintf("127.0.0.%d", i)
		want[a] = rows[a].accepted
		if rows[a].accepted > each || tot.MissedRuns == 0 && rows[a].accepted != each {
			t.Errorf("%s: accepted %d, want %d", a, rows[a].accepted, each)
		}
	}
	for a, w := range want {
		if rows[a].accepted != w || gained[a] != w {
			t.Errorf("after swaps under traffic: %s accepted %d, the reads' gains add up to %d, want %d", a, rows[a].accepted, gained[a], w)
		}
	}

	// The final summary, and the drains handed over (one more swap drains
	// what the map in use holds).
	c, err := tr.Total()
	if err != nil {
		t.Fatal(err)
	}
	rotate()
	for _, a := range c.Addresses {
		w := want[a.Addr.String()]
		if a.Accepted != w || drained[a.Addr.String()] != w {
			t.Errorf("%s: summary %d, drains %d, want %d", a.Addr, a.Accepted, drained[a.Addr.String()], w)
		}
	}
	if c.TotalAccepted != tot.TotalAccepted || len(c.Addresses) != len(want) {
		t.Errorf("summary: %d accepted from %d addresses, want %d from %d", c.TotalAccepted, len(c.Addresses), tot.TotalAccepted, len(want))
	}
}
