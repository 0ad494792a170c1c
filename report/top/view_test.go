package top

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/acceptwatch/acceptwatch/report"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from current output")

var testLoc = time.FixedZone("TEST", 2*3600)

var t0 = time.Date(2026, 11, 21, 20, 0, 0, 0, testLoc)

// fakeSource hands out prepared frames, one per Refresh.
type fakeSource struct {
	caps   Caps
	frames []*Frame
	err    error
	asked  []Query
}

func (s *fakeSource) Caps() Caps { return s.caps }

func (s *fakeSource) Refresh(q Query, advance bool) (*Frame, error) {
	s.asked = append(s.asked, q)
	if s.err != nil {
		return nil, s.err
	}
	f := s.frames[0]
	if len(s.frames) > 1 {
		s.frames = s.frames[1:]
	}
	return f, nil
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// qr is a percentile known to lie in [lo, lo+width].
func qr(lo, width time.Duration) report.Quantile { return report.Quantile{Lo: lo, Hi: lo + width} }

// frames are two refreshes one second apart: a busy address, a slow one, a
// half-open flooder and an IPv6 client.
func sampleFrames() (*Frame, *Frame) {
	first := &Frame{
		Time: t0.Add(10 * time.Second), Interval: 10 * time.Second,
		Totals: Totals{Accepted: 1000, Handshakes: 1002, Syns: 1100, SynackRetrans: 40, Addresses: 4, MaxAddresses: 65536},
		Ports:  []Port{{Port: 443, Accepted: 1000, BacklogMax: 12, BacklogLimit: 4096, WaitP99: qr(1984*time.Microsecond, 64*time.Microsecond), HasWait: true}},
	}
	second := &Frame{
		Time: t0.Add(11 * time.Second), Interval: time.Second,
		Totals: Totals{Accepted: 1900, Handshakes: 1903, Syns: 2010, SynackRetrans: 52, ListenOverflows: 3,
			Addresses: 4, MaxAddresses: 65536},
		Ports: []Port{
			{Port: 443, Accepted: 1890, NotAccepted: 1, SynackRetrans: 52, BacklogMax: 130, BacklogLimit: 128,
				WaitP99: qr(118*time.Millisecond, 4*time.Millisecond), HasWait: true, BacklogNow: 97, NowLimit: 128, HasNow: true},
			{Port: 8443, Accepted: 10, BacklogMax: 1, BacklogLimit: 511, WaitP99: qr(14848*time.Nanosecond, 512*time.Nanosecond), HasWait: true},
		},
		Rows: []Row{
			{Addr: addr("203.0.113.9"), New: 880, Accepted: 1700, Syns: 1710, Handshakes: 1701, Open: 3, WaitP99: qr(65536*time.Microsecond, 58464*time.Microsecond), HasWait: true, Last: t0.Add(11 * time.Second)},
			{Addr: addr("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"), New: 15, Accepted: 150, Syns: 150, Handshakes: 150, WaitP99: qr(16*time.Microsecond, 16*time.Microsecond), HasWait: true, Last: t0.Add(10500 * time.Millisecond)},
			{Addr: addr("198.51.100.7"), New: 5, Accepted: 50, Syns: 50, Handshakes: 51, NotAccepted: 1, Open: 40, WaitP99: qr(4*time.Microsecond, 3200*time.Nanosecond), HasWait: true, Last: t0.Add(9 * time.Second)},
			{Addr: addr("192.0.2.66"), Syns: 100, SynackRetrans: 52, Last: t0.Add(-50 * time.Second)},
		},
		NowKnown: true, NowTime: t0.Add(11 * time.Second),
		Findings: []string{
			"port 443: queue wait p99 120ms is over 100ms: the server is slow to accept()",
			"port 443: accept queue reached its limit (130/128)",
			"accept queues overflowed 3 times (ListenOverflows): handshakes were dropped; raise the listen backlog or accept faster",
			"192.0.2.66: 52 SYN-ACK retransmits: handshakes left half-open (SYN flood or lossy client)",
		},
	}
	return first, second
}

func testModel(caps Caps, styles Styles, frames ...*Frame) *Model {
	src := &fakeSource{caps: caps, frames: frames}
	m := New(src, Options{Mode: "fexit", Ports: "port 443,8443", Refresh: time.Second, Start: t0, Location: testLoc, Styles: styles})
	return m
}

// step runs a command the way bubbletea would and feeds its message back.
func step(m *Model, cmd tea.Cmd) tea.Cmd {
	if cmd == nil {
		return nil
	}
	msg := cmd()
	if _, ok := msg.(tea.QuitMsg); ok {
		return nil
	}
	_, next := m.Update(msg)
	return next
}

func size(m *Model, w, h int) {
	step(m, func() tea.Msg { return tea.WindowSizeMsg{Width: w, Height: h} })
}

// loaded is a model that has taken both sample frames in.
func loaded(caps Caps, w, h int) *Model {
	a, b := sampleFrames()
	m := testModel(caps, PlainStyles(), a, b)
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	step(m, m.Init())                                          // first frame; its tick is not run
	m.Update(frameMsg{f: mustRefresh(m, true), advance: true}) // second frame
	return m
}

func mustRefresh(m *Model, advance bool) *Frame {
	f, err := m.src.Refresh(m.query(), advance)
	if err != nil {
		panic(err)
	}
	return f
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./report/top -update to create)", err)
	}
	if !bytes.Equal([]byte(got), want) {
		t.Errorf("%s mismatch\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

var allCaps = Caps{Syns: true}
var fullCaps = Caps{Syns: true, Drops: true, DropsWhat: "SYNs and final ACKs", Open: true, BacklogNow: true,
	Group: true, GroupBy: "/24 and /64"}
var tracepointCaps = Caps{SynsWhy: "no SYN hook in tracepoint mode"}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		caps Caps
		w, h int
		keys string
	}{
		{"80x24", allCaps, 80, 24, ""},
		{"full_120x40", fullCaps, 120, 40, ""},
		{"full_80x24", fullCaps, 80, 24, ""},
		{"full_sorted_open_120x40", fullCaps, 120, 40, "sssssss"},
		{"full_help_80x24", fullCaps, 80, 24, "?"},
		{"120x40", allCaps, 120, 40, ""},
		{"200x50", allCaps, 200, 50, ""},
		{"tracepoint_80x24", tracepointCaps, 80, 24, ""},
		{"tracepoint_120x40", tracepointCaps, 120, 40, ""},
		{"sorted_accepted_80x24", allCaps, 80, 24, "s"},
		{"sorted_synack_120x40", allCaps, 120, 40, "sssss"},
		{"paused_80x24", allCaps, 80, 24, "p"},
		{"help_80x24", tracepointCaps, 80, 24, "?"},
		{"group_na_80x24", tracepointCaps, 80, 24, "g"},
		{"small_60x12", allCaps, 60, 12, ""},
		{"tiny_30x8", allCaps, 30, 8, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := loaded(tc.caps, tc.w, tc.h)
			if tc.caps == fullCaps {
				addDrops(m)
			}
			for _, k := range tc.keys {
				m.key(string(k))
			}
			got := m.View()
			checkWellFormed(t, got, tc.w, tc.h)
			checkGolden(t, tc.name, got+"\n")
		})
	}
}

// checkWellFormed: at most h lines, none wider than w, and the key line last.
func checkWellFormed(t *testing.T, screen string, w, h int) {
	t.Helper()
	lines := strings.Split(screen, "\n")
	if len(lines) > h {
		t.Errorf("%d lines on a %d-line screen", len(lines), h)
	}
	for i, l := range lines {
		if n := ansi.StringWidth(l); n > w {
			t.Errorf("line %d is %d columns wide on a %d-column screen: %q", i, n, w, l)
		}
	}
	if w >= minWidth && h >= minHeight && len(lines) != h {
		t.Errorf("%d lines, want the screen's %d (key line at the bottom)", len(lines), h)
	}
}

// Whatever the size, the frame and the keys, the screen stays inside the
// terminal, and every address row has as many cells as its header.
func TestAnySizeWellFormed(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		w, h := 20+rng.IntN(230), 5+rng.IntN(75)
		m := loaded(allCaps, w, h)
		if rng.IntN(2) == 0 {
			m.caps = tracepointCaps
		}
		for range rng.IntN(4) {
			m.key("s")
		}
		screen := m.View()
		checkWellFormed(t, screen, w, h)
		checkRows(t, screen)
		if t.Failed() {
			t.Fatalf("at %dx%d:\n%s", w, h, screen)
		}
	}
}

var headerRe = regexp.MustCompile(`^REMOTE\s`)

// checkRows: each line under the address header, up to the first blank
// line, has as many fields as the header.
func checkRows(t *testing.T, screen string) {
	t.Helper()
	lines := strings.Split(screen, "\n")
	for i, l := range lines {
		if !headerRe.MatchString(l) {
			continue
		}
		want := len(strings.Fields(l))
		for _, r := range lines[i+1 : len(lines)-1] { // the last is the key line
			if strings.TrimSpace(r) == "" || strings.HasPrefix(r, "finding") || strings.HasPrefix(r, "…") {
				break
			}
			if got := len(strings.Fields(r)); got != want {
				t.Errorf("row %q has %d fields, header %q has %d", r, got, l, want)
			}
		}
	}
}

func TestColorsFollowNoColor(t *testing.T) {
	sgr := regexp.MustCompile("\x1b\\[([0-9;]*)m")
	colour := func(screen string) bool {
		for _, m := range sgr.FindAllStringSubmatch(screen, -1) {
			for _, p := range strings.Split(m[1], ";") {
				if len(p) == 2 && (p[0] == '3' || p[0] == '4' || p[0] == '9') && p != "39" && p != "49" {
					return true
				}
			}
		}
		return false
	}
	render := func(noColor bool) string {
		t.Setenv("NO_COLOR", "")
		if noColor {
			t.Setenv("NO_COLOR", "1")
		}
		r := lipgloss.NewRenderer(&bytes.Buffer{})
		r.SetColorProfile(termenv.ANSI) // a terminal with 16 colours
		a, b := sampleFrames()
		m := testModel(allCaps, StylesFor(r), a, b)
		size(m, 120, 40)
		step(m, m.Init())
		m.Update(frameMsg{f: mustRefresh(m, true), advance: true})
		return m.View()
	}
	withColour, mono := render(false), render(true)
	if !colour(withColour) {
		t.Errorf("no colour without NO_COLOR:\n%q", withColour)
	}
	if colour(mono) {
		t.Errorf("colour with NO_COLOR:\n%q", mono)
	}
	if !strings.Contains(mono, "\x1b[1m") || !strings.Contains(mono, "\x1b[7m") {
		t.Errorf("with NO_COLOR, bold and reverse should still mark headers and the sort column")
	}
	checkWellFormed(t, withColour, 120, 40)
	checkWellFormed(t, mono, 120, 40)
}

// addDrops gives the loaded frame's rows and ports some accept-queue drops.
func addDrops(m *Model) {
	f := m.cur.frame
	f.Rows[0].Drops, f.Rows[3].Drops = 12, 40
	f.Ports[0].Drops = 52
}

// Rows per network: the first column is the prefix, then its addresses.
func TestGoldenGrouped(t *testing.T) {
	_, b := sampleFrames()
	g := *b
	g.Grouped = true
	g.Rows = []Row{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Members: 3, New: 885, Accepted: 1750, Syns: 1760, Handshakes: 1752, Open: 43, Drops: 12, WaitP99: qr(65536*time.Microsecond, 58464*time.Microsecond), HasWait: true, Last: t0.Add(11 * time.Second)},
		{Prefix: netip.MustParsePrefix("2001:db8:aaaa:bbbb::/64"), Members: 1, New: 15, Accepted: 150, Syns: 150, Handshakes: 150, WaitP99: qr(16*time.Microsecond, 16*time.Microsecond), HasWait: true, Last: t0.Add(10500 * time.Millisecond)},
	}
	a, _ := sampleFrames()
	m := testModel(fullCaps, PlainStyles(), a, &g)
	size(m, 120, 40)
	step(m, m.Init())
	m.Update(frameMsg{f: mustRefresh(m, true), advance: true})
	got := m.View()
	checkWellFormed(t, got, 120, 40)
	checkGolden(t, "grouped_120x40", got+"\n")
	for _, w := range []int{80, 60} {
		size(m, w, 24)
		checkWellFormed(t, m.View(), w, 24)
	}
}
