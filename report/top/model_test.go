package top

import (
	"errors"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

func TestSortKeyCyclesAvailableColumns(t *testing.T) {
	m := loaded(tracepointCaps, 120, 40)
	var got []string
	for range numColumns {
		got = append(got, m.sort.String())
		m.key("s")
	}
	// No SYN counter, drop counter or snapshot: no SYNS, DROPS, OPEN. Round again.
	want := "RATE/s ACCEPTED HANDSHAKES NOT_ACC SYNACK_RT WAIT_P99 LAST RATE/s ACCEPTED HANDSHAKES"
	if strings.Join(got, " ") != want {
		t.Errorf("s cycles %q, want %q", strings.Join(got, " "), want)
	}
	m.sort = ColRate
	m.key("S")
	if m.sort != ColLast {
		t.Errorf("S from RATE/s goes to %s, want LAST", m.sort)
	}
	m = loaded(allCaps, 120, 40)
	m.key("s")
	m.key("s")
	if m.sort != ColSyns {
		t.Errorf("with SYNs counted, s s sorts by %s, want SYNS", m.sort)
	}
}

// s re-sorts the rows on screen at once and asks for a redraw that does
// not move the rates' window.
func TestSortRedrawsAtOnce(t *testing.T) {
	m := loaded(allCaps, 120, 40)
	src := m.src.(*fakeSource)
	first := func() string {
		for _, l := range strings.Split(m.View(), "\n") {
			if strings.HasPrefix(l, "REMOTE") {
				continue
			}
			if f := strings.Fields(l); len(f) > 2 && strings.Count(f[0], ".") == 3 || len(f) > 2 && strings.Contains(f[0], ":") && !strings.HasSuffix(f[0], ":") {
				return f[0]
			}
		}
		return ""
	}
	if got := first(); got != "203.0.113.9" {
		t.Fatalf("busiest first by rate: got %s", got)
	}
	for range 5 { // RATE/s -> ... -> SYNACK_RT
		m.key("s")
	}
	if got := first(); got != "192.0.2.66" {
		t.Errorf("sorted by SYNACK_RT, first row is %s, want 192.0.2.66\n%s", got, m.View())
	}
	cmd := m.key("s")
	if cmd == nil {
		t.Fatal("s asks for no refresh")
	}
	msg := cmd().(frameMsg)
	if msg.advance {
		t.Error("the redraw for a new sort order moved the rate window")
	}
	if q := src.asked[len(src.asked)-1]; q.Sort != ColWaitP99 || q.Rows < 40 {
		t.Errorf("redraw asked %+v", q)
	}
}

func TestPauseFreezesDisplayCountingGoesOn(t *testing.T) {
	a, b := sampleFrames()
	c := *b
	c.Time = b.Time.Add(time.Second)
	c.Totals.Accepted += 500
	m := testModel(allCaps, PlainStyles(), a, b, &c)
	size(m, 120, 40)
	step(m, m.Init())
	m.Update(frameMsg{f: mustRefresh(m, true), advance: true})
	m.key("p")
	before := m.View()
	if !strings.Contains(before, "PAUSED") {
		t.Fatalf("no PAUSED mark:\n%s", before)
	}
	// A refresh while paused is read (the rates keep their window) but not shown.
	m.Update(frameMsg{f: mustRefresh(m, true), advance: true})
	if m.View() != before {
		t.Errorf("display changed while paused")
	}
	if m.cur.frame.Totals.Accepted != 2400 || m.cur.rates.accepted != 500 {
		t.Errorf("counting stopped while paused: %d accepted, %.0f/s", m.cur.frame.Totals.Accepted, m.cur.rates.accepted)
	}
	m.key("p")
	if v := m.View(); !strings.Contains(v, "2400") || strings.Contains(v, "PAUSED") {
		t.Errorf("after p again, the latest frame is not shown:\n%s", v)
	}
}

func TestRatesAreDifferencesOfCounters(t *testing.T) {
	m := loaded(allCaps, 120, 40)
	r := m.cur.rates
	// 1000 -> 1900 accepts in 1s; 1100 -> 2010 SYNs; 0 -> 3 overflows.
	if r.accepted != 900 || r.syns != 910 || r.overflows != 3 || r.synack != 12 {
		t.Errorf("rates %+v", r)
	}
	if m.cur.port[PortKey{Port: 443}] != 890 || m.cur.port[PortKey{Port: 8443}] != 10 {
		t.Errorf("port rates %v", m.cur.port)
	}
	// The first frame's rates are since the start (10 s).
	if m.spark[0] != 100 || m.spark[1] != 900 {
		t.Errorf("sparkline %v", m.spark)
	}
}

// The sparkline covers a minute and never grows past it.
func TestSparklineBounded(t *testing.T) {
	a, _ := sampleFrames()
	m := testModel(allCaps, PlainStyles(), a)
	for i := range 500 {
		f := *a
		f.Time = a.Time.Add(time.Duration(i) * time.Second)
		f.Totals.Accepted = uint64(i * 10)
		m.apply(&f, true)
	}
	if len(m.spark) != 60 || cap(m.spark) > 128 {
		t.Errorf("sparkline holds %d values (capacity %d), want the last 60", len(m.spark), cap(m.spark))
	}
	if line := m.sparkline(&m.cur, 200); strings.Count(line, "█")+strings.Count(line, "▇") == 0 {
		t.Errorf("flat sparkline for a steady rate: %q", line)
	}
}

func TestKeys(t *testing.T) {
	m := loaded(tracepointCaps, 80, 24)
	if cmd := m.key("g"); cmd != nil || !strings.Contains(m.View(), "grouping by prefix is not available") {
		t.Errorf("g without prefix counts: %q", m.View())
	}
	m.key("?")
	if !strings.Contains(m.View(), "keys") || !strings.Contains(m.View(), "Esc") {
		t.Errorf("? shows no help")
	}
	m.key("esc")
	if strings.Contains(m.View(), "this help") {
		t.Errorf("Esc leaves the help on")
	}
	for _, k := range []string{"q", "ctrl+c"} {
		cmd := m.key(k)
		if cmd == nil {
			t.Fatalf("%s does not quit", k)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Errorf("%s does not quit", k)
		}
	}
}

// A failed refresh ends the program with the error (bubbletea then restores
// the terminal and the command prints it).
func TestRefreshErrorQuits(t *testing.T) {
	src := &fakeSource{err: errors.New("reading address counters: boom")}
	m := New(src, Options{Start: t0})
	_, cmd := m.Update(m.Init()())
	if cmd == nil {
		t.Fatal("no quit after a failed refresh")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok || m.Err() == nil {
		t.Errorf("failed refresh: err %v", m.Err())
	}
}

// A taller terminal asks for more rows at once; the screen is redrawn at the
// new size without waiting for the next refresh.
func TestResize(t *testing.T) {
	m := loaded(allCaps, 120, 40)
	src := m.src.(*fakeSource)
	_, cmd := m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	if cmd != nil {
		t.Errorf("a smaller terminal needs no new rows")
	}
	checkWellFormed(t, m.View(), 80, 24)
	_, cmd = m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	if cmd == nil {
		t.Fatal("a taller terminal asks for no rows")
	}
	cmd()
	if q := src.asked[len(src.asked)-1]; q.Rows < 60 {
		t.Errorf("asked for %d rows on a 60-line screen", q.Rows)
	}
	checkWellFormed(t, m.View(), 200, 60)
}
