package report

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from current output")

// Fixed zone so output does not depend on TZ.
var testLoc = time.FixedZone("TEST", 2*3600)

func at(sec int) time.Time {
	return time.Date(2026, 11, 21, 20, 1, 2, 0, testLoc).Add(time.Duration(sec) * time.Second)
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./report/ -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s mismatch\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func sampleEvents() []Event {
	return []Event{
		{Time: at(1), PID: 1234, Comm: "nginx", LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 80,
			RemoteAddr: netip.MustParseAddr("192.168.1.7"), RemotePort: 51234,
			QueueWait: 1234 * time.Microsecond, HasWait: true, Backlog: 3, BacklogMax: 511, HasBacklog: true},
		{Time: at(2).Add(500 * time.Millisecond), PID: 1234, Comm: "nginx", LocalAddr: netip.MustParseAddr("2001:db8::1"), LocalPort: 443,
			RemoteAddr: netip.MustParseAddr("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"), RemotePort: 40000},
		// v4-mapped client of a dual-stack listener, hostile comm.
		{Time: at(3), PID: 4294967295, Comm: "evil\x1b[2J\n\\x\x00pad", LocalAddr: netip.MustParseAddr("::ffff:10.0.0.1"), LocalPort: 8080,
			RemoteAddr: netip.MustParseAddr("::ffff:203.0.113.9"), RemotePort: 65535,
			QueueWait: 2500 * time.Millisecond, HasWait: true, Backlog: 1, BacklogMax: 4096, HasBacklog: true, ClientGone: true},
		// Long comm (after escaping) pushes later columns.
		{Time: at(4), PID: 7, Comm: "\x01\x02\x03\x04\x05\x06\x07", LocalAddr: netip.MustParseAddr("fe80::1%eth0"), LocalPort: 22,
			RemoteAddr: netip.MustParseAddr("fe80::2%eth0"), RemotePort: 1},
	}
}

func q(lo, hi time.Duration) Quantile { return Quantile{Lo: lo, Hi: hi} }

func sampleSummary(final bool) Summary {
	return Summary{
		Start:      at(0),
		End:        at(10),
		AttachMode: "tracepoint",
		Ports:      []string{"80", "443", "8000-8100"},
		Addresses: []AddrStats{
			{Addr: netip.MustParseAddr("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"), Accepted: 1, Handshakes: 1, First: at(2), Last: at(2)},
			{Addr: netip.MustParseAddr("192.168.1.7"), Accepted: 12, Handshakes: 12, First: at(1), Last: at(9),
				// log2 buckets: ranges where the bucket is wide, one number where min and max pin it down.
				Wait: Wait{Count: 12, P50: q(256*time.Microsecond, 512*time.Microsecond), P99: q(1024*time.Microsecond, 1900*time.Microsecond),
					Min: 300 * time.Microsecond, Max: 1900 * time.Microsecond}},
			{Addr: netip.MustParseAddr("::ffff:203.0.113.9"), Accepted: 3, Handshakes: 5, First: at(3), Last: at(8),
				NotAccepted: 2, ClientGone: 1, SynackRetrans: 7, Syns: 12, Drops: 6, Wait: Wait{Count: 3, P50: q(time.Second, 2*time.Second),
					P99: q(2500*time.Millisecond, 2500*time.Millisecond), Min: 1200 * time.Millisecond, Max: 2500 * time.Millisecond}},
			{Addr: netip.MustParseAddr("198.51.100.1"), Accepted: 0, Handshakes: 2}, // handshakes only, times unknown
		},
		TotalAccepted:      17,
		TotalHandshakes:    21,
		LostEvents:         4,
		AddressOverflow:    1,
		MaxAddresses:       10240,
		Final:              final,
		SynCounter:         map[bool]string{true: "cgroup_skb"}[final], // both layouts: with and without SYNS and DROPS
		DropCounters:       map[bool][]string{true: {"syn", "final_ack"}}[final],
		TotalDrops:         6,
		TotalSyns:          25,
		TotalNotAccepted:   2,
		TotalClientGone:    1,
		TotalSynackRetrans: 7,
		Listeners: []PortStats{
			// Log-linear buckets: one number each.
			{Port: 80, Accepted: 12, BacklogMax: 3, BacklogLimit: 511, Wait: Wait{Count: 12, P50: q(496*time.Microsecond, 512*time.Microsecond),
				P99: q(1856*time.Microsecond, 1900*time.Microsecond), Min: 300 * time.Microsecond, Max: 1900 * time.Microsecond}},
			{Port: 8080, Accepted: 3, NotAccepted: 2, SynackRetrans: 7, Syns: 12, Drops: 6, BacklogMax: 1, BacklogLimit: 4096, Wait: Wait{Count: 3,
				P50: q(1880*time.Millisecond, 1950*time.Millisecond), P99: q(2450*time.Millisecond, 2500*time.Millisecond),
				Min: 1200 * time.Millisecond, Max: 2500 * time.Millisecond}},
		},
		KernelCounters: []KernelCounter{{"ListenOverflows", 5}, {"ListenDrops", 5}, {"TCPReqQFullDrop", 0}},
		Findings:       []string{"queue wait p99 4s on port 8080 is over 1s (--max-wait)"},
	}
}

// withNow adds a snapshot taken at the summary: an address that did not
// connect while tracing but is connected now sorts after those that did.
func withNow(s Summary) Summary {
	s.Addresses[1].Open = 10
	s.Addresses[2].SynRecv = 2
	s.Addresses = append(s.Addresses, AddrStats{Addr: netip.MustParseAddr("::ffff:10.9.9.9"), Open: 3})
	s.Now = &ConnStates{Established: 13, SynRecv: 2, CloseWait: 1, TimeWait: 7, FinWait: 1}
	s.NetNS = 4026531840
	return s
}

func TestGoldenText(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: testLoc})
	for _, e := range sampleEvents() {
		if err := w.Event(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Summary(withNow(sampleSummary(true))); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "text", buf.Bytes())
}

func TestGoldenTextIntervalsQuiet(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: testLoc, Quiet: true, Top: 2})
	s := sampleSummary(false)
	if err := w.Summary(s); err != nil {
		t.Fatal(err)
	}
	// Empty window, all ports, no overflow; End on another day.
	empty := Summary{Start: at(10), End: at(10 + 24*3600), AttachMode: "fexit", MaxAddresses: 10240}
	if err := w.Summary(empty); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "text_interval", buf.Bytes())
}

func TestGoldenJSON(t *testing.T) {
	var buf bytes.Buffer
	w := NewJSON(&buf)
	for _, e := range sampleEvents() {
		if err := w.Event(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Summary(withNow(sampleSummary(false))); err != nil {
		t.Fatal(err)
	}
	if err := w.Summary(Summary{Start: at(0), End: at(1), AttachMode: "kretprobe", Final: true}); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "json", buf.Bytes())
}

// TestGoldenGroupByPrefix: the summary's rows per network, text and JSON.
func TestGoldenGroupByPrefix(t *testing.T) {
	s := sampleSummary(true)
	s.GroupByPrefix, s.Prefix = true, PrefixLen{V4: 16, V6: 32}
	s.Addresses = append(s.Addresses, AddrStats{Addr: netip.MustParseAddr("192.168.200.1"), Accepted: 4, Handshakes: 4, Syns: 9, Drops: 5,
		First: at(4), Last: at(5), Wait: Wait{Count: 4, P50: q(512*time.Microsecond, time.Millisecond), P99: q(2500*time.Microsecond, 2500*time.Microsecond),
			Min: 600 * time.Microsecond, Max: 2500 * time.Microsecond}})
	var buf bytes.Buffer
	if err := NewText(&buf, TextOptions{Location: testLoc, Quiet: true, Top: 3}).Summary(s); err != nil {
		t.Fatal(err)
	}
	if err := NewJSON(&buf).Summary(s); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "group_by_prefix", buf.Bytes())
}
