package report

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// TextOptions configures the human-readable writer.
type TextOptions struct {
	// Top limits summary tables to this many rows; <= 0 means all.
	Top int
	// Quiet suppresses the live-event header line (in quiet mode the
	// caller sends no events; any Event still prints its line).
	Quiet bool
	// Location for printed times; nil means time.Local.
	Location *time.Location
	// NetNS shows the NETNS column on live lines from the start; without
	// it the column appears (with a new header) once a second namespace
	// is seen, so that the one-namespace case keeps its 80 columns.
	NetNS bool
	// NetNSName labels a namespace inode on live lines (nil: the inode).
	NetNSName func(uint32) string
	// Container shows the CONTAINER column (ContainerLabel) from the
	// start; without it the column appears once a second label is seen.
	Container bool
}

// Live-line layout, like bcc's tcpaccept: address columns fit IPv4 so that a
// line fits 80 columns; longer (IPv6) values push later columns right rather
// than being truncated. The columns' widths are those of liveHeader.
const (
	liveHeader = "TIME     PID     COMM             IP LADDR           LPORT RADDR           RPORT WAIT     BL\n"
	clockFmt   = "15:04:05"
	dateFmt    = "2006-01-02 15:04:05"
)

type textWriter struct {
	w       io.Writer
	opt     TextOptions
	header  bool // live header already written
	written bool // anything written before (live line or summary)
	buf     bytes.Buffer
	line    []byte // reused by Event
	firstNS uint32 // the first event's namespace
	nsSeen  bool
	firstCt string // the first event's ContainerLabel
	// The clock column of the last event's second: most lines share it.
	clockSec int64
	clock    []byte
}

// NewText returns a Writer producing bcc-style live lines and
// human-readable summary tables.
func NewText(w io.Writer, opt TextOptions) Writer {
	if opt.Location == nil {
		opt.Location = time.Local
	}
	return &textWriter{w: w, opt: opt}
}

func (t *textWriter) flush() error {
	_, err := t.w.Write(t.buf.Bytes())
	t.buf.Reset()
	return err
}

// Event writes one live line, preceded by the column header the first time
// (unless Quiet). It appends by hand, as fmt would print "%-8s %-7d %-16s
// %-2d %-15s %-5d %-15s %-5d %-8s %s%s": one line per connection, where fmt
// was most of acceptwatch's CPU with live lines.
func (t *textWriter) Event(e Event) error {
	b := t.line[:0]
	needHeader := !t.header && !t.opt.Quiet
	ct := ContainerLabel(e)
	if !t.nsSeen {
		t.firstNS, t.firstCt, t.nsSeen = e.NetNS, ct, true
	} else {
		if !t.opt.NetNS && e.NetNS != t.firstNS {
			t.opt.NetNS = true
			needHeader = !t.opt.Quiet // the layout changes: say so
		}
		if !t.opt.Container && ct != t.firstCt {
			t.opt.Container = true
			needHeader = !t.opt.Quiet
		}
	}
	if needHeader {
		b = t.appendHeader(b)
	}
	raddr := Normalize(e.RemoteAddr)
	if sec := e.Time.Unix(); sec != t.clockSec || t.clock == nil {
		t.clockSec, t.clock = sec, e.Time.In(t.opt.Location).AppendFormat(t.clock[:0], clockFmt)
	}
	col := func(b []byte, start, width int) []byte {
		for n := utf8.RuneCount(b[start:]); n < width; n++ {
			b = append(b, ' ')
		}
		return append(b, ' ')
	}
	start := len(b)
	b = col(append(b, t.clock...), start, 8)
	start = len(b)
	b = col(strconv.AppendUint(b, uint64(e.PID), 10), start, 7)
	start = len(b)
	b = col(append(b, Sanitize(e.Comm)...), start, 16)
	start = len(b)
	b = col(strconv.AppendInt(b, int64(family(raddr)), 10), start, 2)
	start = len(b)
	b = col(appendAddr(b, Normalize(e.LocalAddr)), start, 15)
	start = len(b)
	b = col(strconv.AppendUint(b, uint64(e.LocalPort), 10), start, 5)
	start = len(b)
	b = col(appendAddr(b, raddr), start, 15)
	start = len(b)
	b = col(strconv.AppendUint(b, uint64(e.RemotePort), 10), start, 5)
	start = len(b)
	if e.HasWait {
		b = appendDuration(b, e.QueueWait)
	} else {
		b = append(b, '-')
	}
	b = col(b, start, 8)
	start = len(b)
	if e.HasBacklog {
		b = strconv.AppendUint(b, uint64(e.Backlog), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(e.BacklogMax), 10)
	} else {
		b = append(b, '-')
	}
	if t.opt.NetNS || t.opt.Container {
		b = col(b, start, 15) // BL's 2 columns and what its values need
	}
	if t.opt.NetNS {
		start = len(b)
		if t.opt.NetNSName != nil {
			b = append(b, Sanitize(t.opt.NetNSName(e.NetNS))...)
		} else {
			b = strconv.AppendUint(b, uint64(e.NetNS), 10)
		}
		if t.opt.Container {
			b = col(b, start, netnsWidth)
		}
	}
	if t.opt.Container {
		b = append(b, ct...)
	}
	if e.ClientGone {
		b = append(b, " client-gone"...)
	}
	b = append(b, '\n')
	t.line = b
	if _, err := t.w.Write(b); err != nil {
		return err
	}
	if needHeader {
		t.header = true
	}
	t.written = true
	return nil
}

// netnsWidth is the NETNS column's width when CONTAINER follows it: names
// of /run/netns and "host" fit, an inode (10 digits) pushes CONTAINER right.
const netnsWidth = 10

// appendHeader appends the live header, with the optional columns on.
func (t *textWriter) appendHeader(b []byte) []byte {
	if !t.opt.NetNS && !t.opt.Container {
		return append(b, liveHeader...)
	}
	b = append(b, liveHeader[:len(liveHeader)-1]...)
	b = append(b, "              "...) // BL's width
	if t.opt.NetNS {
		b = append(b, "NETNS"...)
		if t.opt.Container {
			b = append(b, "      "...)
		}
	}
	if t.opt.Container {
		b = append(b, "CONTAINER"...)
	}
	return append(b, '\n')
}

// containerWidth bounds the CONTAINER column: a Kubernetes label
// (k8s:<8>/<12>) fits; a longer cgroup path keeps its end, where its most
// specific part is.
const containerWidth = 32

// ContainerLabel is an event's CONTAINER column: its container or unit
// label, else its cgroup path, else "-"; sanitised (users name cgroups) and
// cut to containerWidth runes, "…" marking a cut.
func ContainerLabel(e Event) string {
	l := e.Container
	if l == "" {
		l = e.Cgroup
	}
	if l == "" {
		return "-"
	}
	l = Sanitize(l)
	if n := utf8.RuneCountInString(l); n > containerWidth {
		r := []rune(l)
		l = "…" + string(r[n-containerWidth+1:])
	}
	return l
}

// Summary writes one summary block. It is separated from earlier output
// (live lines or a previous summary) by a blank line.
func (t *textWriter) Summary(s Summary) error {
	t.buf.Reset()
	b := &t.buf
	loc := t.opt.Location
	if t.written {
		b.WriteByte('\n')
	}

	kind := "interval"
	if s.Final {
		kind = "summary"
	}
	start, end := s.Start.In(loc), s.End.In(loc)
	endFmt := dateFmt
	if start.Year() == end.Year() && start.YearDay() == end.YearDay() {
		endFmt = clockFmt
	}
	fmt.Fprintf(b, "--- acceptwatch %s: %s to %s (%.1fs)", kind,
		start.Format(dateFmt), end.Format(endFmt), s.End.Sub(s.Start).Seconds())
	if s.AttachMode != "" {
		fmt.Fprintf(b, ", attach %s", Sanitize(s.AttachMode))
	}
	if len(s.Ports) == 0 {
		b.WriteString(", all ports")
	} else {
		fmt.Fprintf(b, ", ports %s", Sanitize(strings.Join(s.Ports, ",")))
	}
	if s.Cgroup != "" {
		fmt.Fprintf(b, " of cgroup %s", Sanitize(s.Cgroup))
	}
	b.WriteString(" ---\n")

	writeRows(b, &s, t.opt.Top, loc)

	if len(s.Listeners) > 0 {
		multi := s.Namespaces() > 1
		cols := []string{"PORT", "ACCEPTED", "SYNS", "DROPS", "NOT_ACC", "SYNACK_RT", "BACKLOG_MAX", "WAIT_P50", "WAIT_P99", "WAIT_MAX"}
		keep := countedColumns(&s, cols)
		align := strings.Repeat("r", len(keep(cols)))
		if multi {
			align = "l" + align
		}
		pt := table{align: align}
		row := func(cells []string, ns string) []string {
			if multi {
				return append([]string{ns}, keep(cells)...)
			}
			return keep(cells)
		}
		pt.add(row(cols, "NETNS")...)
		for _, p := range s.Listeners {
			bl := "-"
			if p.BacklogLimit > 0 || p.BacklogMax > 0 {
				bl = fmt.Sprintf("%d/%d", p.BacklogMax, p.BacklogLimit)
			}
			pt.add(row([]string{strconv.Itoa(int(p.Port)), num(p.Accepted), num(p.Syns), num(p.Drops), num(p.NotAccepted),
				num(p.SynackRetrans), bl, quant(p.Wait.P50, p.Wait.Count), quant(p.Wait.P99, p.Wait.Count), dur(p.Wait.Max, p.Wait.Count)},
				NetNSLabel(s.NetNSNames, p.NetNS))...)
		}
		pt.write(b)
	}

	if c := s.Now; c != nil {
		fmt.Fprintf(b, "connections now: %d (ESTABLISHED %d, SYN_RECV %d, CLOSE_WAIT %d, TIME_WAIT %d, FIN_WAIT %d, other %d), netns %s\n",
			c.Total(), c.Established, c.SynRecv, c.CloseWait, c.TimeWait, c.FinWait, c.Other, Sanitize(NetNSLabel(s.NetNSNames, uint32(s.NetNS))))
	}
	fmt.Fprintf(b, "lost live events: %d\n", s.LostEvents)
	fmt.Fprintf(b, "address-map overflow: %d", s.AddressOverflow)
	if s.AddressOverflow > 0 {
		fmt.Fprintf(b, " (map full at %d addresses; raise --max-addresses)", s.MaxAddresses)
	}
	b.WriteByte('\n')
	var kc []string
	for _, c := range s.KernelCounters {
		if c.Delta > 0 {
			kc = append(kc, fmt.Sprintf("%s +%d", c.Name, c.Delta))
		}
	}
	if len(kc) > 0 {
		var of []string
		if s.CountersNetNS != 0 {
			of = append(of, "netns "+NetNSLabel(s.NetNSNames, s.CountersNetNS))
		}
		if s.Cgroup != "" {
			of = append(of, "every cgroup") // TcpExt counts the whole namespace
		}
		where := ""
		if len(of) > 0 {
			where = " (" + strings.Join(of, ", ") + ")"
		}
		fmt.Fprintf(b, "kernel counters%s: %s\n", where, strings.Join(kc, ", "))
	}
	for _, f := range s.Findings {
		fmt.Fprintf(b, "finding: %s\n", Sanitize(f))
	}

	if err := t.flush(); err != nil {
		return err
	}
	t.written = true
	return nil
}

// countedColumns returns a filter that takes the SYNS and DROPS cells out
// of rows laid out as header where those are not counted, and OPEN and
// SYN_RECV (connections now) where no snapshot was taken.
func countedColumns(s *Summary, header []string) func([]string) []string {
	skip := map[int]bool{}
	for i, h := range header {
		if (h == "SYNS" && !s.SynsCounted()) || (h == "DROPS" && !s.DropsCounted()) ||
			((h == "OPEN" || h == "SYN_RECV") && s.Now == nil) {
			skip[i] = true
		}
	}
	return func(cells []string) []string {
		out := make([]string, 0, len(cells))
		for i, c := range cells {
			if !skip[i] {
				out = append(out, c)
			}
		}
		return out
	}
}

// writeRows writes the table of remote addresses (or of networks with
// GroupByPrefix): the top rows, one line for the rest, and the totals.
func writeRows(b *bytes.Buffer, s *Summary, top int, loc *time.Location) {
	var rows []PrefixStats
	var restN int
	var restAcc uint64
	what := "addresses"
	if s.GroupByPrefix {
		what = "networks"
		rows = GroupByPrefix(s.Addresses, s.Prefix)
	} else {
		addrs := prepare(s.Addresses)
		shown := addrs
		if top > 0 && len(shown) > top {
			shown = shown[:top]
		}
		for _, a := range shown {
			rows = append(rows, PrefixStats{Addresses: 1, AddrStats: a})
		}
		for _, a := range addrs[len(shown):] {
			restAcc += a.Accepted
		}
		restN = len(addrs) - len(shown)
	}
	if s.GroupByPrefix && top > 0 && len(rows) > top {
		for _, g := range rows[top:] {
			restAcc += g.Accepted
		}
		restN = len(rows) - top
		rows = rows[:top]
	}

	head := []string{"REMOTE"}
	lead := func(r PrefixStats) []string { return []string{r.Addr.String()} }
	if s.GroupByPrefix {
		head = []string{"NETWORK", "ADDRS"}
		lead = func(r PrefixStats) []string { return []string{r.Prefix.String(), num(r.Addresses)} }
	}
	// Rows per (namespace, address) once there is more than one namespace.
	nsCols := 0
	if s.Namespaces() > 1 {
		nsCols = 1
		head = append([]string{"NETNS"}, head...)
		inner := lead
		lead = func(r PrefixStats) []string { return append([]string{NetNSLabel(s.NetNSNames, r.NetNS)}, inner(r)...) }
	}
	head = append(head, "ACCEPTED", "SYNS", "HANDSHAKES", "DROPS", "NOT_ACC", "GONE", "SYNACK_RT", "OPEN", "SYN_RECV",
		"WAIT_P50", "WAIT_P99", "WAIT_MAX", "FIRST", "LAST")
	cut := countedColumns(s, head)
	align := strings.Repeat("l", 1+nsCols) + strings.Repeat("r", len(head)-3-nsCols) + "ll"
	tb := table{align: strings.Join(cut(strings.Split(align, "")), "")}
	tb.add(cut(head)...)
	for _, r := range rows {
		p50, p99 := quant(r.Wait.P50, r.Wait.Count), quant(r.Wait.P99, r.Wait.Count)
		if s.GroupByPrefix {
			p50, p99 = "-", "-" // not kept per network
		}
		tb.add(cut(append(lead(r), num(r.Accepted), num(r.Syns), num(r.Handshakes), num(r.Drops), num(r.NotAccepted), num(r.ClientGone),
			num(r.SynackRetrans), num(r.Open), num(r.SynRecv), p50, p99, dur(r.Wait.Max, r.Wait.Count), clock(r.First, loc), clock(r.Last, loc)))...)
	}
	if restN > 0 {
		tb.line(fmt.Sprintf("… and %d more %s (%d accepts)", restN, what, restAcc))
	}
	if len(s.Addresses) == 0 {
		tb.line("no connections")
	}
	total := []string{"TOTAL"}
	if s.Namespaces() > 1 {
		total = append(total, "")
	}
	if s.GroupByPrefix {
		total = append(total, num(uint64(len(s.Addresses))))
	}
	var now ConnStates
	if s.Now != nil {
		now = *s.Now
	}
	tb.add(cut(append(total, num(s.TotalAccepted), num(s.TotalSyns), num(s.TotalHandshakes), num(s.TotalDrops), num(s.TotalNotAccepted),
		num(s.TotalClientGone), num(s.TotalSynackRetrans), num(now.Established), num(now.SynRecv)))...)
	tb.write(b)
}

func clock(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(loc).Format(clockFmt)
}

func num(n uint64) string { return strconv.FormatUint(n, 10) }

// dur prints a wait; "-" when no wait was measured.
func dur(d time.Duration, count uint64) string {
	if count == 0 {
		return "-"
	}
	return FormatDuration(d)
}

// quant prints a percentile; "-" when no wait was measured.
func quant(q Quantile, count uint64) string {
	if count == 0 {
		return "-"
	}
	return FormatQuantile(q)
}

// FormatQuantile prints a percentile no more precisely than it is known:
// one number when that is within 5 % of the truth, else its range, as
// "8–9µs" or "262–524ms".
func FormatQuantile(q Quantile) string {
	if q.Precise() {
		return FormatDuration(q.Est())
	}
	lo, hi := FormatDuration(q.Lo), FormatDuration(q.Hi)
	switch {
	case lo == hi:
		return lo
	case q.Hi <= time.Microsecond:
		return "≤1µs"
	case q.Lo < time.Microsecond:
		lo = "0µs"
	}
	// One unit for both ends when they share it.
	for _, unit := range []string{"µs", "ms", "s"} {
		if strings.HasSuffix(lo, unit) && strings.HasSuffix(hi, unit) && !strings.HasPrefix(lo, "<") &&
			strings.TrimRight(strings.TrimSuffix(lo, unit), "0123456789.") == "" {
			return strings.TrimSuffix(lo, unit) + "–" + hi
		}
	}
	return lo + "–" + hi
}

// FormatDuration prints d with three significant digits at most: 850µs,
// 12.3ms, 2.05s.
func FormatDuration(d time.Duration) string { return string(appendDuration(nil, d)) }

func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d < time.Microsecond:
		return append(b, "<1µs"...)
	case d < time.Millisecond:
		return append(strconv.AppendInt(b, int64(d/time.Microsecond), 10), "µs"...)
	case d < 999500*time.Microsecond: // rounds to 1000ms and up: seconds
		return append(strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'g', 3, 64), "ms"...)
	case d < 999500*time.Millisecond:
		return append(strconv.AppendFloat(b, d.Seconds(), 'g', 3, 64), 's')
	default: // 'g' would print 1e+03
		return append(strconv.AppendFloat(b, d.Seconds(), 'f', 0, 64), 's')
	}
}

// FormatRate prints a rate with up to three significant digits, without
// its unit: 0.25, 2.5, 25, 840.
func FormatRate(r float64) string {
	switch {
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 0, 64)
	case r >= 1:
		return strconv.FormatFloat(r, 'f', 1, 64)
	default:
		return strconv.FormatFloat(r, 'f', 2, 64)
	}
}

// table lays out rows in columns as wide as their widest cell; align has
// one letter per column, l or r. Rows may have fewer cells than columns.
type table struct {
	align string
	rows  [][]string
	lines map[int]string // free text after row i-1
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) line(s string) {
	if t.lines == nil {
		t.lines = map[int]string{}
	}
	t.lines[len(t.rows)] = s
	t.rows = append(t.rows, nil)
}

func (t *table) write(b *bytes.Buffer) {
	width := make([]int, len(t.align))
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for i, r := range t.rows {
		if r == nil {
			b.WriteString(t.lines[i])
			b.WriteByte('\n')
			continue
		}
		var line strings.Builder
		for j, c := range r {
			pad := strings.Repeat(" ", width[j]-utf8.RuneCountInString(c))
			if j > 0 {
				line.WriteString("  ")
			}
			if t.align[j] == 'r' {
				line.WriteString(pad + c)
			} else {
				line.WriteString(c + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
}
