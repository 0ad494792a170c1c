package report

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
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
	liveHeader = "TIME     PID     COMM             IP LADDR           LPORT RADDR           RPORT\n"
	liveFormat = "%-8s %-7d %-16s %-2d %-15s %-5d %-15s %d\n"
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
		e.RemotePort)
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

	// Column widths fit the rows actually shown and the TOTAL line.
	rw, aw, hw := len("REMOTE"), len("ACCEPTED"), len("HANDSHAKES")
	names := make([]string, len(shown))
	for i, a := range shown {
		names[i] = a.Addr.String()
		rw = max(rw, len(names[i]))
		aw = max(aw, numLen(a.Accepted))
		hw = max(hw, numLen(a.Handshakes))
	}
	rw = max(rw, len("TOTAL"))
	aw = max(aw, numLen(s.TotalAccepted))
	hw = max(hw, numLen(s.TotalHandshakes))

	fmt.Fprintf(b, "%-*s  %*s  %*s  %-8s  %s\n", rw, "REMOTE", aw, "ACCEPTED", hw, "HANDSHAKES", "FIRST", "LAST")
	if len(addrs) == 0 {
		b.WriteString("no connections\n")
	}
	for i, a := range shown {
		fmt.Fprintf(b, "%-*s  %*d  %*d  %-8s  %s\n", rw, names[i], aw, a.Accepted, hw, a.Handshakes,
			clock(a.First, loc), clock(a.Last, loc))
	}
	if len(rest) > 0 {
		var m uint64
		for _, a := range rest {
			m += a.Accepted
		}
		fmt.Fprintf(b, "… and %d more addresses (%d accepts)\n", len(rest), m)
	}
	fmt.Fprintf(b, "%-*s  %*d  %*d\n", rw, "TOTAL", aw, s.TotalAccepted, hw, s.TotalHandshakes)
	fmt.Fprintf(b, "lost live events: %d\n", s.LostEvents)
	fmt.Fprintf(b, "address-map overflow: %d", s.AddressOverflow)
	if s.AddressOverflow > 0 {
		fmt.Fprintf(b, " (map full at %d addresses; raise --max-addresses)", s.MaxAddresses)
	}
	b.WriteByte('\n')

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

func numLen(n uint64) int {
	return len(strconv.FormatUint(n, 10))
}
