package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"192.0.2.1", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"fe80::1%eth0", "fe80::1"},
		{"::ffff:10.1.2.3%eth0", "10.1.2.3"},
		{"::1", "::1"},
	} {
		got := Normalize(netip.MustParseAddr(tc.in))
		if got != netip.MustParseAddr(tc.want) {
			t.Errorf("Normalize(%s) = %s, want %s", tc.in, got, tc.want)
		}
		if strings.Contains(tc.want, ".") != got.Is4() {
			t.Errorf("Normalize(%s) = %s: Is4 = %v", tc.in, got, got.Is4())
		}
		if got.Zone() != "" {
			t.Errorf("Normalize(%s) kept zone %q", tc.in, got.Zone())
		}
	}
	if got := Normalize(netip.Addr{}); got.IsValid() {
		t.Errorf("Normalize(zero) = %v, want invalid", got)
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestSortAddresses(t *testing.T) {
	a := addrs("10.0.0.3", "10.0.0.1", "10.0.0.2", "2001:db8::1", "10.0.0.10", "9.0.0.1")
	s := []AddrStats{
		{Addr: a[0], Accepted: 5, Handshakes: 1},
		{Addr: a[1], Accepted: 5, Handshakes: 1},
		{Addr: a[2], Accepted: 5, Handshakes: 9},
		{Addr: a[3], Accepted: 7},
		{Addr: a[4], Accepted: 5, Handshakes: 1},
		{Addr: a[5], Accepted: 1, Handshakes: 100},
	}
	want := addrs("2001:db8::1", "10.0.0.2", "10.0.0.1", "10.0.0.3", "10.0.0.10", "9.0.0.1")
	// Deterministic whatever the input order.
	for r := range len(s) {
		in := slices.Clone(s)
		in = append(in[r:], in[:r]...)
		slices.Reverse(in[:len(in)/2])
		SortAddresses(in)
		var got []netip.Addr
		for _, x := range in {
			got = append(got, x.Addr)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("rotation %d: got %v, want %v", r, got, want)
		}
	}
}

// tableRows returns the REMOTE column of the text summary's data rows.
func tableRows(t *testing.T, out string) (rows []string, more string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "REMOTE ") })
	if i < 0 {
		t.Fatalf("no table header in:\n%s", out)
	}
	for _, l := range lines[i+1:] {
		if strings.HasPrefix(l, "TOTAL ") {
			return rows, more
		}
		if strings.HasPrefix(l, "… and ") {
			more = l
			continue
		}
		rows = append(rows, strings.Fields(l)[0])
	}
	t.Fatalf("no TOTAL line in:\n%s", out)
	return nil, ""
}

func TestTextTopCut(t *testing.T) {
	s := Summary{Start: time.Unix(0, 0), End: time.Unix(10, 0), Final: true}
	// 10 addresses: 10.0.0.N with N accepts, plus ties at the cut edge.
	for n := 1; n <= 10; n++ {
		s.Addresses = append(s.Addresses, AddrStats{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}), Accepted: uint64(n)})
		s.TotalAccepted += uint64(n)
	}
	s.Addresses = append(s.Addresses,
		AddrStats{Addr: netip.MustParseAddr("10.0.1.2"), Accepted: 8},
		AddrStats{Addr: netip.MustParseAddr("::ffff:10.0.1.1"), Accepted: 8}, // normalised, sorts before 10.0.1.2
	)
	s.TotalAccepted += 16

	for _, tc := range []struct {
		top      int
		wantRows []string
		wantMore string
	}{
		{3, []string{"10.0.0.10", "10.0.0.9", "10.0.0.8"}, "… and 9 more addresses (44 accepts)"},
		{5, []string{"10.0.0.10", "10.0.0.9", "10.0.0.8", "10.0.1.1", "10.0.1.2"}, "… and 7 more addresses (28 accepts)"},
		{11, nil, "… and 1 more addresses (1 accepts)"},
		{12, nil, ""},
		{0, nil, ""},
		{-1, nil, ""},
	} {
		var buf bytes.Buffer
		if err := NewText(&buf, TextOptions{Top: tc.top, Location: time.UTC}).Summary(s); err != nil {
			t.Fatal(err)
		}
		rows, more := tableRows(t, buf.String())
		wantN := tc.top
		if tc.top <= 0 || tc.top > 12 {
			wantN = 12
		}
		if len(rows) != wantN {
			t.Errorf("top %d: %d rows, want %d:\n%s", tc.top, len(rows), wantN, buf.String())
		}
		if tc.wantRows != nil && !slices.Equal(rows, tc.wantRows) {
			t.Errorf("top %d: rows %v, want %v", tc.top, rows, tc.wantRows)
		}
		if more != tc.wantMore {
			t.Errorf("top %d: more line %q, want %q", tc.top, more, tc.wantMore)
		}
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^TOTAL +%d +0 +0 +0 +0$`, s.TotalAccepted)).MatchString(buf.String()) {
			t.Errorf("top %d: TOTAL line missing total %d:\n%s", tc.top, s.TotalAccepted, buf.String())
		}
	}
}

func TestTextSummaryLines(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: time.UTC})
	s := Summary{Start: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), End: time.Date(2026, 1, 2, 3, 4, 7, 500e6, time.UTC)}
	if err := w.Summary(s); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"--- acceptwatch interval: 2026-01-02 03:04:05 to 03:04:07 (2.5s), all ports ---\n",
		"\nno connections\n",
		"\nlost live events: 0\n",
		"\naddress-map overflow: 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.HasPrefix(out, "\n") || strings.Contains(out, "TIME ") {
		t.Errorf("summary without prior events must not start with a blank line or live header:\n%s", out)
	}
	if strings.Contains(out, "raise --max-addresses") {
		t.Errorf("overflow hint shown without overflow:\n%s", out)
	}
}

func TestTextQuietNoHeader(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Quiet: true, Location: time.UTC})
	if err := w.Event(Event{Time: time.Unix(0, 0), Comm: "x", RemoteAddr: netip.MustParseAddr("1.2.3.4")}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "RADDR") {
		t.Errorf("quiet mode printed header:\n%s", buf.String())
	}
	buf.Reset()
	w = NewText(&buf, TextOptions{Location: time.UTC})
	for range 3 {
		if err := w.Event(Event{Time: time.Unix(0, 0), Comm: "x", RemoteAddr: netip.MustParseAddr("1.2.3.4")}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "RADDR"); n != 1 {
		t.Errorf("header printed %d times, want 1:\n%s", n, buf.String())
	}
}

func TestTextLiveAlignment(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: time.UTC})
	evs := []Event{
		{Comm: "a", LocalAddr: netip.MustParseAddr("1.2.3.4"), RemoteAddr: netip.MustParseAddr("5.6.7.8"), LocalPort: 1, RemotePort: 2},
		{Comm: "b", LocalAddr: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), RemoteAddr: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), LocalPort: 65535, RemotePort: 65535},
	}
	for _, e := range evs {
		if err := w.Event(e); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	// IPv4 lines: every column starts at the same offset as its header, and
	// the line fits 100 columns. Longer IPv6 addresses push the columns after
	// them, but fields stay separated.
	if len(lines[1]) > 100 {
		t.Errorf("IPv4 line is %d columns wide: %q", len(lines[1]), lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) != 10 {
		t.Errorf("IPv6 line has %d fields: %q", len(f), lines[2])
	}
	for _, col := range []string{"IP", "LADDR", "LPORT", "RADDR", "RPORT", "WAIT", "BL"} {
		off := strings.Index(lines[0], col)
		for _, l := range lines[1:2] {
			if off >= len(l) || l[off-1] != ' ' || l[off] == ' ' {
				t.Errorf("column %s (offset %d) misaligned in %q", col, off, l)
			}
		}
	}
	if !strings.Contains(lines[1], " 4  1.2.3.4 ") || !strings.Contains(lines[2], " 6  ffff:") {
		t.Errorf("family column wrong:\n%s", buf.String())
	}
}

func TestTextBlankLineAfterEvents(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: time.UTC})
	if err := w.Event(Event{Comm: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Summary(Summary{Final: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\n\n--- acceptwatch summary: ") {
		t.Errorf("no blank line before summary:\n%s", buf.String())
	}
}

// jsonLine mirrors the documented schema for parse-back checks.
type jsonLine struct {
	Type            string            `json:"type"`
	Time            string            `json:"time"`
	PID             uint32            `json:"pid"`
	Comm            string            `json:"comm"`
	CgroupID        uint64            `json:"cgroup_id"`
	Family          int               `json:"family"`
	LocalAddr       string            `json:"local_addr"`
	LocalPort       uint16            `json:"local_port"`
	RemoteAddr      string            `json:"remote_addr"`
	RemotePort      uint16            `json:"remote_port"`
	QueueWaitUs     *int64            `json:"queue_wait_us"`
	Backlog         *uint32           `json:"backlog"`
	BacklogMax      *uint32           `json:"backlog_max"`
	ClientGone      bool              `json:"client_gone"`
	State           string            `json:"state"`
	Final           bool              `json:"final"`
	Start           string            `json:"start"`
	End             string            `json:"end"`
	DurationS       float64           `json:"duration_s"`
	AttachMode      string            `json:"attach_mode"`
	Ports           []string          `json:"ports"`
	TotalAccepted   uint64            `json:"total_accepted"`
	TotalHandshakes uint64            `json:"total_handshakes"`
	LostEvents      uint64            `json:"lost_events"`
	AddressOverflow uint64            `json:"address_overflow"`
	MaxAddresses    uint32            `json:"max_addresses"`
	TotalNotAcc     uint64            `json:"total_not_accepted"`
	TotalGone       uint64            `json:"total_client_gone"`
	TotalSynack     uint64            `json:"total_synack_retrans"`
	TotalSyns       *uint64           `json:"total_syns"`
	TotalDrops      *uint64           `json:"total_drops"`
	SynCounter      *string           `json:"syn_counter"`
	DropCounters    []string          `json:"drop_counters"`
	KernelCounters  map[string]uint64 `json:"kernel_counters"`
	CountersNetNS   uint32            `json:"kernel_counters_netns"`
	Findings        []string          `json:"findings"`
	Percentiles     string            `json:"percentiles"`
	Listeners       []json.RawMessage `json:"listeners"`
	ConnectionsNow  json.RawMessage   `json:"connections_now"`
	NetNS           *uint64           `json:"netns"`
	Addresses       []struct {
		NetNS         uint32          `json:"netns"`
		Addr          string          `json:"addr"`
		Accepted      uint64          `json:"accepted"`
		Handshakes    uint64          `json:"handshakes"`
		First         *string         `json:"first"`
		Last          *string         `json:"last"`
		NotAccepted   uint64          `json:"not_accepted"`
		ClientGone    uint64          `json:"client_gone"`
		SynackRetrans uint64          `json:"synack_retrans"`
		Syns          *uint64         `json:"syns"`
		Drops         *uint64         `json:"drops"`
		QueueWait     json.RawMessage `json:"queue_wait"`
		Open          *uint64         `json:"open"`
		SynRecv       *uint64         `json:"syn_recv"`
	} `json:"addresses"`
}

// countingWriter records each Write call.
type countingWriter struct{ writes [][]byte }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestJSONParseBack(t *testing.T) {
	var cw countingWriter
	w := NewJSON(&cw)
	ts := time.Date(2026, 11, 21, 19, 1, 2, 123456789, time.UTC)
	if err := w.Event(Event{Time: ts, PID: 42, Comm: "a<b>&\x1b\xff", LocalAddr: netip.MustParseAddr("::ffff:10.0.0.1"), LocalPort: 80,
		RemoteAddr: netip.MustParseAddr("::ffff:192.0.2.1"), RemotePort: 5555}); err != nil {
		t.Fatal(err)
	}
	s := Summary{Start: ts, End: ts.Add(1500 * time.Millisecond), AttachMode: "fexit", TotalAccepted: 7, TotalHandshakes: 8,
		LostEvents: 1, AddressOverflow: 2, MaxAddresses: 3, Final: true}
	for n := range 30 { // more than any text top cut
		s.Addresses = append(s.Addresses, AddrStats{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(n)}), Accepted: uint64(n % 4)})
	}
	s.Addresses[0].First, s.Addresses[0].Last = ts, ts
	if err := w.Summary(s); err != nil {
		t.Fatal(err)
	}
	if len(cw.writes) != 2 {
		t.Fatalf("got %d writes, want one per object", len(cw.writes))
	}
	var lines []jsonLine
	for _, p := range cw.writes {
		if bytes.Count(p, []byte("\n")) != 1 || p[len(p)-1] != '\n' {
			t.Fatalf("write is not exactly one line: %q", p)
		}
		var l jsonLine
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("%v: %s", err, p)
		}
		lines = append(lines, l)
	}
	ev := lines[0]
	if ev.Type != "accept" || ev.Time != "2026-11-21T19:01:02.123456789Z" || ev.PID != 42 || ev.Comm != `a<b>&\x1b\xff` ||
		ev.Family != 4 || ev.LocalAddr != "10.0.0.1" || ev.LocalPort != 80 || ev.RemoteAddr != "192.0.2.1" || ev.RemotePort != 5555 {
		t.Errorf("accept parsed back as %+v", ev)
	}
	if !bytes.Contains(cw.writes[0], []byte(`"comm":"a<b>&`)) {
		t.Errorf("HTML-escaped comm: %s", cw.writes[0])
	}
	sm := lines[1]
	if sm.Type != "summary" || !sm.Final || sm.Start != "2026-11-21T19:01:02.123456789Z" || sm.DurationS != 1.5 ||
		sm.AttachMode != "fexit" || sm.TotalAccepted != 7 || sm.TotalHandshakes != 8 || sm.LostEvents != 1 ||
		sm.AddressOverflow != 2 || sm.MaxAddresses != 3 {
		t.Errorf("summary parsed back as %+v", sm)
	}
	if sm.Ports == nil || len(sm.Ports) != 0 || !bytes.Contains(cw.writes[1], []byte(`"ports":[]`)) {
		t.Errorf("ports should be [], got %s", cw.writes[1])
	}
	if len(sm.Addresses) != 30 {
		t.Fatalf("got %d addresses, want all 30", len(sm.Addresses))
	}
	for i, a := range sm.Addresses[1:] {
		prev := sm.Addresses[i]
		if prev.Accepted < a.Accepted {
			t.Errorf("addresses not sorted: %v before %v", prev, a)
		}
	}
	var nulls int
	for _, a := range sm.Addresses {
		if a.Addr == "192.0.2.0" {
			if a.First == nil || *a.First != "2026-11-21T19:01:02.123456789Z" || a.Last == nil {
				t.Errorf("first/last lost: %+v", a)
			}
		} else if a.First == nil && a.Last == nil {
			nulls++
		}
	}
	if nulls != 29 || !bytes.Contains(cw.writes[1], []byte(`"first":null,"last":null`)) {
		t.Errorf("zero times should be null (%d nulls): %s", nulls, cw.writes[1])
	}

	// Empty summary: addresses is [] not null.
	cw.writes = nil
	if err := w.Summary(Summary{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cw.writes[0], []byte(`"addresses":[]`)) {
		t.Errorf("empty addresses: %s", cw.writes[0])
	}
}

func TestJSONKeyOrder(t *testing.T) {
	var buf bytes.Buffer
	w := NewJSON(&buf)
	if err := w.Event(Event{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Summary(Summary{Addresses: []AddrStats{{}}}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	want := [][]string{
		{"type", "time", "pid", "comm", "netns", "cgroup_id", "family", "local_addr", "local_port", "remote_addr", "remote_port",
			"queue_wait_us", "backlog", "backlog_max", "client_gone", "state"},
		{"type", "final", "start", "end", "duration_s", "attach_mode", "ports", "total_accepted", "total_handshakes",
			"lost_events", "address_overflow", "max_addresses", "total_not_accepted", "total_client_gone",
			"total_synack_retrans", "total_syns", "total_drops", "syn_counter", "drop_counters", "kernel_counters", "kernel_counters_netns",
			"findings", "percentiles", "listeners", "connections_now", "netns", "addresses"},
	}
	for i := 0; sc.Scan(); i++ {
		line := sc.Text()
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if len(m) != len(want[i]) {
			t.Errorf("line %d has %d keys, want %d: %s", i, len(m), len(want[i]), line)
		}
		prev := -1
		for _, k := range want[i] {
			// Top-level keys are distinct from nested ones, so the first
			// occurrence is the top-level key.
			at := strings.Index(line, `"`+k+`":`)
			if at <= prev {
				t.Errorf("line %d: key %q at %d, not after previous key (%d): %s", i, k, at, prev, line)
			}
			prev = at
		}
	}
}

type errWriter struct{ err error }

func (e errWriter) Write(p []byte) (int, error) { return 0, e.err }

func TestWriteErrorsPropagate(t *testing.T) {
	for name, w := range map[string]Writer{
		"text": NewText(errWriter{syscall.EPIPE}, TextOptions{}),
		"json": NewJSON(errWriter{syscall.EPIPE}),
	} {
		if err := w.Event(Event{}); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("%s Event: err = %v, want EPIPE", name, err)
		}
		if err := w.Summary(Summary{}); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("%s Summary: err = %v, want EPIPE", name, err)
		}
	}
}

func TestTextSingleWrite(t *testing.T) {
	var cw countingWriter
	w := NewText(&cw, TextOptions{Location: time.UTC})
	_ = w.Event(Event{})
	_ = w.Event(Event{})
	_ = w.Summary(Summary{Addresses: []AddrStats{{Accepted: 1}}})
	if len(cw.writes) != 3 {
		t.Errorf("got %d writes, want 3", len(cw.writes))
	}
}

// A percentile is printed no more precisely than it is known.
func TestFormatQuantile(t *testing.T) {
	us, ms := time.Microsecond, time.Millisecond
	for _, tc := range []struct {
		q    Quantile
		want string
	}{
		{Quantile{9 * us, 9 * us}, "9µs"},                 // exact: one wait, or min = max
		{Quantile{8 * us, 9 * us}, "8–9µs"},               // five waits of 8–9 µs: not "16µs"
		{Quantile{262144 * us, 524288 * us}, "262–524ms"}, // a log2 bucket: the range, not its top
		{Quantile{296 * ms, 310 * ms}, "303ms"},           // within 5 %: one number
		{Quantile{1024 * us, 1900 * us}, "1.02–1.9ms"},    // units shared
		{Quantile{500 * us, 1500 * us}, "500µs–1.5ms"},    // units differ
		{Quantile{0, us}, "≤1µs"},                         // under a microsecond
		{Quantile{0, 999}, "<1µs"},                        // both ends print the same
		{Quantile{0, 2 * us}, "0–2µs"},                    // from under a microsecond
		{Quantile{time.Second, 2 * time.Second}, "1–2s"},  // seconds
		{Quantile{1920 * ms, 1950 * ms}, "1.94s"},         // log-linear port bucket
		{Quantile{900 * ms, 1100 * ms}, "900ms–1.1s"},     // across units
		{Quantile{9500 * us, 10500 * us}, "10ms"},         // exactly 5 %
		{Quantile{9400 * us, 10600 * us}, "9.4–10.6ms"},   // just over
	} {
		if got := FormatQuantile(tc.q); got != tc.want {
			t.Errorf("FormatQuantile(%v–%v) = %q, want %q", tc.q.Lo, tc.q.Hi, got, tc.want)
		}
	}
}

// Live lines are written once per connection: what one costs.
func BenchmarkEvent(b *testing.B) {
	e := Event{Time: time.Now(), PID: 1234, Comm: "nginx", LocalAddr: netip.MustParseAddr("127.0.0.1"), LocalPort: 8080,
		RemoteAddr: netip.MustParseAddr("127.0.1.7"), RemotePort: 51234, QueueWait: 7 * time.Microsecond, HasWait: true,
		Backlog: 2, BacklogMax: 4096, HasBacklog: true, State: "ESTABLISHED"}
	for name, w := range map[string]Writer{
		"text": NewText(io.Discard, TextOptions{}),
		"json": NewJSON(io.Discard),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Event(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		999 * time.Nanosecond:     "<1µs",
		8 * time.Microsecond:      "8µs",
		999 * time.Microsecond:    "999µs",
		12345 * time.Microsecond:  "12.3ms",
		999400 * time.Microsecond: "999ms",
		999600 * time.Microsecond: "1s", // not 1e+03ms
		2050 * time.Millisecond:   "2.05s",
		999600 * time.Millisecond: "1000s", // not 1e+03s
		3 * time.Hour:             "10800s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
