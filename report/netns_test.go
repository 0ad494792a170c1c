package report

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The live NETNS column: absent while one namespace is seen (80 columns),
// then added with a new header when a second one shows up.
func TestLiveNetNSColumn(t *testing.T) {
	var buf bytes.Buffer
	w := NewText(&buf, TextOptions{Location: time.UTC, NetNSName: func(ns uint32) string {
		return map[uint32]string{1: "host", 2: "web"}[ns]
	}})
	ev := Event{Time: time.Unix(0, 0), PID: 1, Comm: "srv", LocalAddr: netip.MustParseAddr("127.0.0.1"), LocalPort: 80,
		RemoteAddr: netip.MustParseAddr("127.0.0.2"), RemotePort: 5000, NetNS: 1}
	w.Event(ev)
	w.Event(ev)
	ev.NetNS = 2
	w.Event(ev)
	ev.NetNS = 1
	w.Event(ev)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("got %d lines, want 2 headers and 4 events:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "NETNS") || strings.Contains(lines[1], "host") {
		t.Errorf("one namespace: no NETNS column:\n%s", buf.String())
	}
	if !strings.HasSuffix(lines[3], "NETNS") || !strings.HasSuffix(lines[4], " web") || !strings.HasSuffix(lines[5], " host") {
		t.Errorf("second namespace: a new header and the column:\n%s", buf.String())
	}
	if i := strings.Index(lines[3], "NETNS"); i != strings.Index(lines[4], "web") {
		t.Errorf("NETNS column not aligned with its header:\n%s", buf.String())
	}
}

// A summary with rows of several namespaces: a NETNS column on address and
// port rows, findings that say which namespace, no flood finding comparing
// one namespace's clients with another's.
func TestSummaryNetNS(t *testing.T) {
	names := map[uint32]string{7: "host", 9: "web"}
	s := Summary{
		Start: time.Unix(0, 0), End: time.Unix(10, 0), Final: true, NetNSNames: names, CountersNetNS: 7,
		Addresses: []AddrStats{
			{Addr: netip.MustParseAddr("10.0.0.1"), NetNS: 7, Accepted: 2},
			{Addr: netip.MustParseAddr("10.0.0.1"), NetNS: 9, Accepted: 5},
			{Addr: netip.MustParseAddr("10.0.0.2"), NetNS: 0, Accepted: 1},
		},
		Listeners:      []PortStats{{Port: 80, NetNS: 7, Accepted: 2, NotAccepted: 1}, {Port: 80, NetNS: 9, Accepted: 5}},
		KernelCounters: []KernelCounter{{Name: "ListenOverflows", Delta: 3}},
	}
	s.Findings = Findings(s, DefaultThresholds)
	var buf bytes.Buffer
	if err := NewText(&buf, TextOptions{Location: time.UTC}).Summary(s); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"\nNETNS    REMOTE    ACCEPTED ", "\nweb      10.0.0.1         5 ", "\nhost     10.0.0.1         2 ", "\nunknown  10.0.0.2         1 ",
		"\nNETNS  PORT  ACCEPTED", "\nhost     80         2", "\nweb      80         5",
		"kernel counters (netns host): ListenOverflows +3",
		"finding: port 80 in netns host: 1 connections completed the handshake",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}
