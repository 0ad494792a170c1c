package top

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/acceptwatch/acceptwatch/report"
)

// Smallest screen the tables are drawn on; below it only a note.
const minWidth, minHeight = 40, 10

// render draws s on a w×h screen: never more than h lines, none wider than w.
func (m *Model) render(s *screen, w, h int) string {
	st := m.opt.Styles
	var lines []string
	add := func(l ...string) { lines = append(lines, l...) }
	add(st.Title.Render(m.title(s, w)))
	if w < minWidth || h < minHeight {
		add(fmt.Sprintf("too small: need %dx%d", minWidth, minHeight))
		return finish(lines, w, h)
	}
	if m.help {
		add(m.helpLines()...)
		lines = lines[:min(len(lines), h-1)]
		add(m.pad(lines, h-1)...)
		add(st.Status.Render(m.status(w)))
		return finish(lines, w, h)
	}
	if s.frame == nil {
		add("", "reading the counters…")
		return finish(append(lines, m.pad(lines, h)...), w, h)
	}
	f := s.frame
	add(m.totals(s, w)...)
	add(m.sparkline(s, w))

	findings := m.findingLines(f, h)
	// Ports get up to an eighth of the screen, addresses the rest; blank
	// lines go first when room is short.
	ports := m.portLines(s, w, max(1, h/8))
	room := h - len(lines) - 1 /* status */ - len(findings) - len(ports)
	blanks := 0
	switch {
	case room >= 6:
		blanks = 2
	case room >= 4:
		blanks = 1
	}
	if blanks > 0 {
		add("")
	}
	add(ports...)
	if blanks > 1 {
		add("")
	}
	add(m.addressLines(f, w, room-blanks)...)
	add(m.pad(lines, h-1-len(findings))...)
	for _, l := range findings {
		add(st.Finding.Render(ansi.Truncate(l, w, "…")))
	}
	add(st.Status.Render(m.status(w)))
	return finish(lines, w, h)
}

// finish cuts every line to w columns and the screen to h lines.
func finish(lines []string, w, h int) string {
	if len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		if ansi.StringWidth(l) > w {
			lines[i] = ansi.Truncate(l, w, "…")
		}
	}
	return strings.Join(lines, "\n")
}

// pad is the blank lines that bring lines to n.
func (m *Model) pad(lines []string, n int) []string {
	if len(lines) >= n {
		return nil
	}
	return make([]string, n-len(lines))
}

func (m *Model) title(s *screen, w int) string {
	parts := []string{"acceptwatch"}
	if s.frame != nil {
		f := s.frame
		parts = append(parts, f.Time.In(m.opt.Location).Format("15:04:05"))
	}
	parts = append(parts, report.Sanitize(m.opt.Mode), report.Sanitize(m.opt.Ports))
	if s.frame != nil {
		f := s.frame
		parts = append(parts, "up "+upTime(f.Time.Sub(m.opt.Start)))
		addrs := fmt.Sprintf("%d addresses", f.Totals.Addresses)
		if f.Totals.AddressOverflow > 0 {
			addrs += fmt.Sprintf(" (map full at %d: %d events not attributed)", f.Totals.MaxAddresses, f.Totals.AddressOverflow)
		}
		parts = append(parts, addrs)
		if age := f.Time.Sub(f.NowTime); f.NowKnown && age >= 2*m.opt.Refresh {
			parts = append(parts, "OPEN "+upTime(age)+" old")
		}
	}
	return strings.Join(parts, "  ")
}

// upTime prints a run's length: 45s, 12m05s, 3h04m.
func upTime(d time.Duration) string {
	d = d.Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// totals is the header grid: counters since the start and their rates over
// the last refresh.
func (m *Model) totals(s *screen, w int) []string {
	t, r := s.frame.Totals, s.rates
	syns, synsRate := "-", "-"
	if m.caps.Syns {
		syns, synsRate = num(t.Syns), rateStr(r.syns)
	}
	cols := []col{
		{name: "", left: true, keep: 9, cells: []string{"total", "/s"}},
		{name: "ACCEPTS", keep: 9, cells: []string{num(t.Accepted), rateStr(r.accepted)}},
		{name: "HANDSHAKES", keep: 8, cells: []string{num(t.Handshakes), rateStr(r.handshakes)}},
		{name: "SYNS", keep: 7, cells: []string{syns, synsRate}},
		{name: "SYNACK_RT", keep: 6, cells: []string{num(t.SynackRetrans), rateStr(r.synack)}},
		{name: "OVERFLOWS", keep: 5, cells: []string{num(t.ListenOverflows), rateStr(r.overflows)}, alert: t.ListenOverflows > 0},
		{name: "SYNCOOKIES", keep: 4, cells: []string{num(t.Syncookies), rateStr(r.syncookies)}, alert: t.Syncookies > 0},
		{name: "LOST", keep: 3, cells: []string{num(t.LostEvents), rateStr(r.lost)}, alert: t.LostEvents > 0},
	}
	return m.table(cols, w, -1)
}

const sparkChars = "▁▂▃▄▅▆▇█"

// sparkline draws accepts/s over the last minute, one character a refresh,
// scaled to the highest rate shown.
func (m *Model) sparkline(s *screen, w int) string {
	label := "accepts/s "
	var peak float64
	for _, v := range s.spark {
		peak = max(peak, v)
	}
	tail := fmt.Sprintf("  last %s, peak %s/s", upTime(time.Duration(m.sparkLen())*m.opt.Refresh), rateStr(peak))
	room := max(w-len(label)-len(tail), 1)
	vals := s.spark
	if len(vals) > room {
		vals = vals[len(vals)-room:]
	}
	levels := []rune(sparkChars)
	var b strings.Builder
	b.WriteString(label)
	for _, v := range vals {
		i := 0
		if peak > 0 && v > 0 {
			// Level 0 is kept for zero: any traffic shows at least level 1.
			i = 1 + int(v/peak*float64(len(levels)-2)+0.5)
		}
		b.WriteRune(levels[min(i, len(levels)-1)])
	}
	b.WriteString(tail)
	return b.String()
}

func (m *Model) portLines(s *screen, w, maxRows int) []string {
	f := s.frame
	if len(f.Ports) == 0 {
		return []string{"no connections on the watched ports yet"}
	}
	ports := f.Ports
	more := 0
	if len(ports) > maxRows {
		ports, more = ports[:maxRows], len(ports)-maxRows
	}
	cols := []col{
		{name: "PORT", keep: 9},
		{name: "RATE/s", keep: 9},
		{name: "ACCEPTED", keep: 8},
		{name: "NOT_ACC", keep: 3},
		{name: "SYNACK_RT", keep: 4},
		{name: "DROPS", keep: 4},
		{name: "BACKLOG_NOW", keep: 5},
		{name: "BACKLOG_MAX", keep: 6},
		{name: "WAIT_P99", keep: 7},
	}
	if !m.caps.Drops {
		cols[5].keep = 1
	}
	if !m.caps.BacklogNow {
		cols[6].keep = 1
	}
	for _, p := range ports {
		now, bmax, wait := "-", "-", "-"
		if m.caps.BacklogNow && f.NowKnown && p.HasNow {
			now = fmt.Sprintf("%d/%d", p.BacklogNow, p.NowLimit)
		}
		if p.BacklogMax > 0 || p.BacklogLimit > 0 {
			bmax = fmt.Sprintf("%d/%d", p.BacklogMax, p.BacklogLimit)
		}
		if p.HasWait {
			wait = report.FormatQuantile(p.WaitP99)
		}
		drops := "-"
		if m.caps.Drops {
			drops = num(p.Drops)
		}
		name := strconv.Itoa(int(p.Port))
		if p.NetNSLabel != "" {
			name += " " + report.Sanitize(p.NetNSLabel)
		}
		cells := []string{name, rateStr(s.port[PortKey{p.NetNS, p.Port}]), num(p.Accepted), num(p.NotAccepted),
			num(p.SynackRetrans), drops, now, bmax, wait}
		for i := range cols {
			cols[i].cells = append(cols[i].cells, cells[i])
		}
	}
	lines := m.table(cols, w, -1)
	if more > 0 {
		lines = append(lines, fmt.Sprintf("… and %d more ports", more))
	}
	return lines
}

func (m *Model) addressLines(f *Frame, w, room int) []string {
	if room <= 0 {
		return nil
	}
	rows := f.Rows[:min(len(f.Rows), room-1)]
	first := "REMOTE"
	if f.Grouped {
		first = "PREFIX"
	}
	cols := []col{{name: first, left: true, keep: 100}}
	if f.Grouped {
		cols = append(cols, col{name: "ADDRS", keep: 97})
	}
	// What stays when the screen is narrow: the sort column, then these.
	keep := [numColumns]int{ColRate: 99, ColAccepted: 9, ColSyns: 7, ColHandshakes: 2, ColNotAccepted: 3,
		ColSynackRetrans: 8, ColDrops: 6, ColOpen: 5, ColWaitP99: 5, ColLast: 4}
	for c := range numColumns {
		k := keep[c]
		if !c.available(m.caps) {
			k = 1 // shown as "-" when there is room
		}
		if c == m.sort {
			k = 98
		}
		cols = append(cols, col{name: c.String(), keep: k, left: c == ColLast})
	}
	secs := f.Interval.Seconds()
	for i := range rows {
		r := &rows[i]
		rate := 0.0
		if secs > 0 {
			rate = float64(r.New) / secs
		}
		syns, drops, open, wait, last := "-", "-", "-", "-", "-"
		if m.caps.Syns {
			syns = num(r.Syns)
		}
		if m.caps.Drops {
			drops = num(r.Drops)
		}
		if m.caps.Open && f.NowKnown {
			open = num(r.Open)
		}
		if r.HasWait {
			wait = report.FormatQuantile(r.WaitP99)
		}
		if !r.Last.IsZero() {
			last = ago(f.Time.Sub(r.Last))
		}
		cells := []string{r.Label()}
		if f.Grouped {
			cells = append(cells, strconv.Itoa(r.Members))
		}
		cells = append(cells, rateStr(rate), num(r.Accepted), syns, num(r.Handshakes), num(r.NotAccepted),
			num(r.SynackRetrans), drops, open, wait, last)
		for j := range cols {
			cols[j].cells = append(cols[j].cells, cells[j])
		}
	}
	sorted := 1 + int(m.sort)
	if f.Grouped {
		sorted++
	}
	lines := m.table(cols, w, sorted)
	if len(rows) == 0 && room >= 2 {
		lines = append(lines, "no connections yet")
	}
	return lines
}

// ago prints how long ago something was last seen: 0s, 12s, 3m, 2h.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(int(d.Seconds()), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
}

func (m *Model) findingLines(f *Frame, h int) []string {
	maxLines := max(1, h/8)
	if maxLines == 1 && len(f.Findings) > 1 {
		return []string{fmt.Sprintf("finding (1 of %d): %s", len(f.Findings), report.Sanitize(f.Findings[0]))}
	}
	var out []string
	for i, s := range f.Findings {
		if i == maxLines-1 && len(f.Findings) > maxLines {
			out = append(out, fmt.Sprintf("… and %d more findings (all in the summary at the end)", len(f.Findings)-i))
			break
		}
		out = append(out, "finding: "+report.Sanitize(s))
	}
	return out
}

func (m *Model) status(w int) string {
	if m.paused {
		return pad("PAUSED: the display is frozen, counting goes on; p resumes", w)
	}
	if m.note != "" {
		return pad(m.note, w)
	}
	g := "g group"
	if !m.caps.Group {
		g = "g group (n/a)"
	}
	if m.help {
		return pad("? or Esc closes this help", w)
	}
	left := fmt.Sprintf("q quit  s sort: %s  p pause  %s  ? keys", m.sort, g)
	return pad(left+fmt.Sprintf("  refresh %s", m.opt.Refresh), w)
}

func pad(s string, w int) string {
	if n := ansi.StringWidth(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

func (m *Model) helpLines() []string {
	// na describes a key or column: what it shows, or what it would and why not.
	na := func(ok bool, what, wouldBe, why string) string {
		if ok {
			return what
		}
		if why == "" {
			why = "not available"
		}
		return wouldBe + " (" + why + ")"
	}
	return []string{
		"",
		"keys",
		"  q, Ctrl-C   quit: the terminal is restored and the summary printed",
		"  s, S        sort by the next (previous) column; the key line names it",
		"  p, Space    pause the display; counting goes on",
		"  g           " + na(m.caps.Group, "rows per network ("+m.caps.GroupBy+", --prefix) or per address", "rows per network", ""),
		"  ?, Esc      this help",
		"",
		"columns: counts since the start; RATE/s over the last refresh",
		"  RATE/s      accepts per second",
		"  ACCEPTED    connections taken by accept()",
		"  SYNS        " + na(m.caps.Syns, "SYNs that reached a listener", "SYNs that reached a listener", m.caps.SynsWhy),
		"  HANDSHAKES  completed TCP handshakes",
		"  NOT_ACC     handshake completed, closed before any accept()",
		"  SYNACK_RT   SYN-ACKs resent: handshakes the client did not finish",
		"  DROPS       " + na(m.caps.Drops, m.caps.DropsWhat+" dropped: accept queue full", "dropped for a full accept queue", "not per address on this kernel"),
		"  OPEN        " + na(m.caps.Open, "connections established now (socket snapshot)", "connections established now", m.caps.NowWhy),
		"  WAIT_P99    queue wait (handshake to accept) p99",
		"  LAST        last seen, how long ago",
		"  OVERFLOWS   TcpExt ListenOverflows, all ports of this network namespace",
		"  SYNCOOKIES  TcpExt SyncookiesSent; LOST: live events lost (none here)",
	}
}

// col is one table column: header, cells, and how long it stays when the
// screen is narrow (higher stays longer).
type col struct {
	name  string
	cells []string
	left  bool
	keep  int
	alert bool // highlight the cells
}

// table lays cols out in at most w columns, dropping the columns that keep
// least first; sorted is the index of the sort column (-1: none), whose
// header is highlighted.
func (m *Model) table(cols []col, w, sorted int) []string {
	const gap = 2
	width := make([]int, len(cols))
	on := make([]bool, len(cols))
	total := -gap
	for i, c := range cols {
		width[i] = ansi.StringWidth(c.name)
		for _, s := range c.cells {
			width[i] = max(width[i], ansi.StringWidth(s))
		}
		on[i] = true
		total += width[i] + gap
	}
	for total > w {
		drop := -1
		for i, c := range cols {
			if on[i] && i > 0 && (drop < 0 || c.keep < cols[drop].keep) {
				drop = i
			}
		}
		if drop < 0 || cols[drop].keep >= 98 {
			break
		}
		on[drop] = false
		total -= width[drop] + gap
	}
	if total > w {
		// Only the first column and the sort column are left: the first
		// gives way (long IPv6 addresses on a narrow screen).
		width[0] = max(width[0]-(total-w), 1)
	}
	st := m.opt.Styles
	cell := func(s string, i int) string {
		s = ansi.Truncate(s, width[i], "…")
		p := strings.Repeat(" ", width[i]-ansi.StringWidth(s))
		if cols[i].left {
			return s + p
		}
		return p + s
	}
	n := 0
	for _, c := range cols {
		n = max(n, len(c.cells))
	}
	lines := make([]string, 0, n+1)
	var b strings.Builder
	sep := ""
	for i, c := range cols {
		if !on[i] {
			continue
		}
		b.WriteString(sep)
		sep = strings.Repeat(" ", gap)
		style := st.Header
		if i == sorted {
			style = st.Sorted
		}
		b.WriteString(style.Render(cell(c.name, i)))
	}
	lines = append(lines, strings.TrimRight(b.String(), " "))
	for r := range n {
		b.Reset()
		sep = ""
		for i, c := range cols {
			if !on[i] {
				continue
			}
			b.WriteString(sep)
			sep = strings.Repeat(" ", gap)
			s := ""
			if r < len(c.cells) {
				s = c.cells[r]
			}
			if c.alert && s != "0" && s != "" {
				b.WriteString(st.Alert.Render(cell(s, i)))
			} else {
				b.WriteString(cell(s, i))
			}
		}
		lines = append(lines, strings.TrimRight(b.String(), " "))
	}
	return lines
}

func num(n uint64) string { return strconv.FormatUint(n, 10) }

// rateStr prints a rate per second: one decimal below 10, whole above.
func rateStr(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 9.95: // what rounds to 10.0 prints as 10
		return strconv.FormatFloat(r, 'f', 1, 64)
	default:
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
}
