package report

import (
	"bytes"
	"fmt"
	"io"
	"slices"
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
}

// Live-line layout, like bcc's tcpaccept: address columns fit IPv4 so that a
// line fits 80 columns; longer (IPv6) values push later columns right rather
// than being truncated.
const (
	liveHeader = "TIME     PID     COMM             IP LADDR           LPORT RADDR           RPORT WAIT     BL\n"
	liveFormat = "%-8s %-7d %-16s %-2d %-15s %-5d %-15s %-5d %-8s %s%s\n"
	clockFmt   = "15:04:05"
	dateFmt    = "2006-01-02 15:04:05"
)

type textWriter struct {
	w       io.Writer
	opt     TextOptions
	header  bool // live header already written
	written bool // anything written before (live line or summary)
	buf     bytes.Buffer
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
// (unless Quiet).
func (t *textWriter) Event(e Event) error {
	t.buf.Reset()
	needHeader := !t.header && !t.opt.Quiet
	if needHeader {
		t.buf.WriteString(liveHeader)
	}
	raddr := Normalize(e.RemoteAddr)
	fmt.Fprintf(&t.buf, liveFormat,
		e.Time.In(t.opt.Location).Format(clockFmt),
		e.PID,
		Sanitize(e.Comm),
		family(raddr),
		Normalize(e.LocalAddr).String(),
		e.LocalPort,
		raddr.String(),
		e.RemotePort,
		liveWait(e),
		liveBacklog(e),
		liveGone(e))
	if err := t.flush(); err != nil {
		return err
	}
	if needHeader {
		t.header = true
	}
	t.written = true
	return nil
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
		b.WriteString(", all ports ---\n")
	} else {
		fmt.Fprintf(b, ", ports %s ---\n", Sanitize(strings.Join(s.Ports, ",")))
	}

	addrs := prepare(s.Addresses)
	shown := addrs
	if t.opt.Top > 0 && len(shown) > t.opt.Top {
		shown = shown[:t.opt.Top]
	}
	rest := addrs[len(shown):]

	// A SYNS column (third) only where the attach mode counts SYNs.
	syns := func(cells []string, n string) []string {
		if !s.SynsCounted {
			return cells
		}
		return slices.Insert(cells, 2, n)
	}
	// OPEN and SYN_RECV (connections now) after SYNACK_RT, where a
	// snapshot was taken.
	now := func(cells []string, open, synRecv string) []string {
		if s.Now == nil {
			return cells
		}
		return slices.Insert(cells, 6, open, synRecv)
	}
	cols := func(cells []string, n, open, synRecv string) []string { return syns(now(cells, open, synRecv), n) }
	tb := table{align: strings.Join(cols(strings.Split("lrrrrrrrrll", ""), "r", "r", "r"), "")}
	tb.add(cols([]string{"REMOTE", "ACCEPTED", "HANDSHAKES", "NOT_ACC", "GONE", "SYNACK_RT", "WAIT_P50", "WAIT_P99", "WAIT_MAX", "FIRST", "LAST"}, "SYNS", "OPEN", "SYN_RECV")...)
	for _, a := range shown {
		tb.add(cols([]string{a.Addr.String(), num(a.Accepted), num(a.Handshakes), num(a.NotAccepted), num(a.ClientGone),
			num(a.SynackRetrans), dur(a.Wait.P50, a.Wait.Count), dur(a.Wait.P99, a.Wait.Count),
			dur(a.Wait.Max, a.Wait.Count), clock(a.First, loc), clock(a.Last, loc)}, num(a.Syns), num(a.Open), num(a.SynRecv))...)
	}
	if len(rest) > 0 {
		var m uint64
		for _, a := range rest {
			m += a.Accepted
		}
		tb.line(fmt.Sprintf("… and %d more addresses (%d accepts)", len(rest), m))
	}
	if len(addrs) == 0 {
		tb.line("no connections")
	}
	var nowTotal ConnStates
	if s.Now != nil {
		nowTotal = *s.Now
	}
	tb.add(cols([]string{"TOTAL", num(s.TotalAccepted), num(s.TotalHandshakes), num(s.TotalNotAccepted),
		num(s.TotalClientGone), num(s.TotalSynackRetrans)}, num(s.TotalSyns), num(nowTotal.Established), num(nowTotal.SynRecv))...)
	tb.write(b)

	if len(s.Listeners) > 0 {
		pt := table{align: strings.Repeat("r", 9)}
		pt.add(syns([]string{"PORT", "ACCEPTED", "NOT_ACC", "SYNACK_RT", "BACKLOG_MAX", "WAIT_P50", "WAIT_P99", "WAIT_MAX"}, "SYNS")...)
		for _, p := range s.Listeners {
			bl := "-"
			if p.BacklogLimit > 0 || p.BacklogMax > 0 {
				bl = fmt.Sprintf("%d/%d", p.BacklogMax, p.BacklogLimit)
			}
			pt.add(syns([]string{strconv.Itoa(int(p.Port)), num(p.Accepted), num(p.NotAccepted), num(p.SynackRetrans), bl,
				dur(p.Wait.P50, p.Wait.Count), dur(p.Wait.P99, p.Wait.Count), dur(p.Wait.Max, p.Wait.Count)}, num(p.Syns))...)
		}
		pt.write(b)
	}

	if c := s.Now; c != nil {
		fmt.Fprintf(b, "connections now: %d (ESTABLISHED %d, SYN_RECV %d, CLOSE_WAIT %d, TIME_WAIT %d, FIN_WAIT %d, other %d), netns %d\n",
			c.Total(), c.Established, c.SynRecv, c.CloseWait, c.TimeWait, c.FinWait, c.Other, s.NetNS)
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
		fmt.Fprintf(b, "kernel counters: %s\n", strings.Join(kc, ", "))
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

// FormatDuration prints d with three significant digits at most: 850µs,
// 12.3ms, 2.05s.
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return "<1µs"
	case d < time.Millisecond:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'g', 3, 64) + "ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'g', 3, 64) + "s"
	}
}

func liveWait(e Event) string {
	if !e.HasWait {
		return "-"
	}
	return FormatDuration(e.QueueWait)
}

func liveBacklog(e Event) string {
	if !e.HasBacklog {
		return "-"
	}
	return fmt.Sprintf("%d/%d", e.Backlog, e.BacklogMax)
}

func liveGone(e Event) string {
	if e.ClientGone {
		return " client-gone"
	}
	return ""
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
