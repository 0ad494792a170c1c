package report

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func floodSummary(addrs ...AddrStats) Summary {
	s := Summary{Start: at(0), End: at(10), SynCounter: "cgroup_skb", Addresses: addrs}
	for _, a := range addrs {
		s.TotalAccepted += a.Accepted
		s.TotalSyns += a.Syns
	}
	return s
}

func conns(addr string, n uint64) AddrStats {
	return AddrStats{Addr: netip.MustParseAddr(addr), Accepted: n, Handshakes: n, Syns: n}
}

func findingsWith(fs []string, frag string) []string {
	var out []string
	for _, f := range fs {
		if strings.Contains(f, frag) {
			out = append(out, f)
		}
	}
	return out
}

func TestFindingsFloodAddress(t *testing.T) {
	th := DefaultThresholds
	s := floodSummary(conns("192.0.2.9", 1500), conns("192.0.2.2", 10), conns("198.51.100.3", 12), conns("2001:db8::1", 8))
	fs := Findings(s, th)
	got := findingsWith(fs, "far more than")
	want := "192.0.2.9: 1500 SYNs (150/s, 98% of all): far more than the other addresses (median 10)"
	if len(got) != 1 || got[0] != want {
		t.Errorf("findings %q, want only %q", fs, want)
	}

	// Without SYNs the accepts tell.
	s.SynCounter = ""
	got = findingsWith(Findings(s, th), "far more than")
	if len(got) != 1 || !strings.HasPrefix(got[0], "192.0.2.9: 1500 accepts (150/s, 98% of all)") {
		t.Errorf("accept findings %q", got)
	}

	// Below the minimum, never a flood: three connections against one.
	s = floodSummary(conns("192.0.2.9", 3), conns("192.0.2.2", 1), conns("192.0.2.3", 1))
	if fs := Findings(s, th); len(fs) != 0 {
		t.Errorf("findings for 3 connections: %q", fs)
	}
	// Alone: no rest to be far above.
	if fs := Findings(floodSummary(conns("192.0.2.9", 5000)), th); len(fs) != 0 {
		t.Errorf("findings for a lone address: %q", fs)
	}
	// An even spread over many addresses names nobody.
	var even []AddrStats
	for i := range 50 {
		even = append(even, conns(fmt.Sprintf("10.%d.0.1", i), 200))
	}
	if fs := Findings(floodSummary(even...), th); len(fs) != 0 {
		t.Errorf("findings for an even spread: %q", fs)
	}
	// Share: 80% of all among three, though only 8x the median.
	s = floodSummary(conns("192.0.2.9", 800), conns("192.0.2.2", 100), conns("192.0.2.3", 100))
	if got := findingsWith(Findings(s, th), "192.0.2.9: 800 SYNs (80/s, 80% of all)"); len(got) != 1 {
		t.Errorf("no share finding: %q", Findings(s, th))
	}
	th.FloodShare = 0
	if got := findingsWith(Findings(s, th), "far more"); len(got) != 0 {
		t.Errorf("share finding with --flood-share 0: %q", got)
	}
}

func TestFindingsFloodPrefix(t *testing.T) {
	var addrs []AddrStats
	for i := 1; i <= 60; i++ {
		addrs = append(addrs, conns(fmt.Sprintf("203.0.113.%d", i), 2))
	}
	addrs = append(addrs, conns("192.0.2.1", 3), conns("198.51.100.1", 3), conns("2001:db8:1::1", 2), conns("2001:db8:1::2", 1))
	s := floodSummary(addrs...)
	fs := Findings(s, DefaultThresholds)
	want := "203.0.113.0/24: 120 SYNs (12/s, 93% of all) from 60 addresses: far more than the other networks (median 3)"
	if got := findingsWith(fs, "far more"); len(got) != 1 || got[0] != want {
		t.Errorf("findings %q, want only %q", fs, want)
	}
	// A network that is mostly one named address is not named again.
	s = floodSummary(conns("203.0.113.9", 500), conns("203.0.113.10", 2), conns("192.0.2.1", 3), conns("198.51.100.1", 4))
	fs = Findings(s, DefaultThresholds)
	if got := findingsWith(fs, "far more"); len(got) != 1 || !strings.HasPrefix(got[0], "203.0.113.9: ") {
		t.Errorf("findings %q, want the address only", fs)
	}
	// --prefix 16: the /24s merge.
	th := DefaultThresholds
	th.Prefix = PrefixLen{V4: 16, V6: 64}
	s = floodSummary(append(addrs, conns("203.0.5.1", 1))...)
	if got := findingsWith(Findings(s, th), "203.0.0.0/16: 121 SYNs"); len(got) != 1 {
		t.Errorf("no /16 finding: %q", Findings(s, th))
	}
}

func TestFindingsHalfOpen(t *testing.T) {
	flood := AddrStats{Addr: netip.MustParseAddr("192.0.2.66"), Syns: 400, Handshakes: 12, SynackRetrans: 900}
	lossy := AddrStats{Addr: netip.MustParseAddr("192.0.2.7"), Syns: 300, Handshakes: 290, Accepted: 290}
	s := floodSummary(flood, lossy)
	fs := Findings(s, DefaultThresholds)
	want := "192.0.2.66: 400 SYNs, 12 completed handshakes, 900 SYN-ACK retransmits: half-open handshakes (SYN flood?)"
	if got := findingsWith(fs, "half-open"); len(got) != 1 || got[0] != want {
		t.Errorf("findings %q, want only %q", fs, want)
	}
	// Spoofed sources: a network of them, none enough alone.
	var addrs []AddrStats
	for i := 1; i <= 50; i++ {
		addrs = append(addrs, AddrStats{Addr: netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i)), Syns: 4, SynackRetrans: 2})
	}
	fs = Findings(floodSummary(append(addrs, lossy)...), DefaultThresholds)
	want = "198.51.100.0/24: 200 SYNs from 50 addresses, 0 completed handshakes: half-open handshakes (SYN flood from one network?)"
	if got := findingsWith(fs, "half-open"); len(got) != 1 || got[0] != want {
		t.Errorf("findings %q, want only %q", fs, want)
	}
	// Without SYNs: the SYN-ACK retransmit findings as before.
	s.SynCounter = ""
	fs = Findings(s, DefaultThresholds)
	if got := findingsWith(fs, "192.0.2.66: 900 SYN-ACK retransmits"); len(got) != 1 {
		t.Errorf("findings without SYNs: %q", fs)
	}
}

func TestFindingsDrops(t *testing.T) {
	a := conns("192.0.2.1", 5)
	a.Drops = 7
	b := conns("192.0.2.2", 5)
	b.Drops = 2
	s := floodSummary(a, b, conns("192.0.2.3", 1))
	s.KernelCounters = []KernelCounter{{"ListenOverflows", 9}}
	s.TotalDrops = 9
	s.DropCounters = []string{"syn", "final_ack"}
	want := "dropped for a full accept queue (SYNs and final ACKs), by address: 192.0.2.1 7, 192.0.2.2 2"
	if got := findingsWith(Findings(s, DefaultThresholds), "dropped for"); len(got) != 1 || got[0] != want {
		t.Errorf("drop findings %q, want %q", got, want)
	}
	s.DropCounters = nil // kernel without attribution: the global counter only
	if got := findingsWith(Findings(s, DefaultThresholds), "dropped for"); len(got) != 0 {
		t.Errorf("drop findings without counters: %q", got)
	}
}

func TestMedianWithout(t *testing.T) {
	for _, tc := range []struct {
		sorted []uint64
		n      uint64
		want   float64
	}{
		{[]uint64{5, 1000}, 1000, 5},
		{[]uint64{1, 2, 3, 1000}, 1000, 2},
		{[]uint64{1, 2, 3, 4, 1000}, 1000, 2.5},
		{[]uint64{3, 3, 3}, 3, 3},
		{[]uint64{0, 0, 7}, 7, 0},
		{[]uint64{1, 500, 500, 500}, 500, 500},
	} {
		if got := medianWithout(tc.sorted, tc.n); got != tc.want {
			t.Errorf("medianWithout(%v, %d) = %v, want %v", tc.sorted, tc.n, got, tc.want)
		}
	}
}

func TestGroupByPrefix(t *testing.T) {
	addrs := []AddrStats{
		{Addr: netip.MustParseAddr("192.0.2.1"), Accepted: 2, Syns: 3, Drops: 1, First: at(5), Last: at(6), Wait: Wait{Count: 2, Max: time.Millisecond}},
		{Addr: netip.MustParseAddr("::ffff:192.0.2.200"), Accepted: 1, Syns: 1, First: at(2), Last: at(9), Wait: Wait{Count: 1, Max: 3 * time.Millisecond}},
		{Addr: netip.MustParseAddr("192.0.3.1"), Accepted: 5},
		{Addr: netip.MustParseAddr("2001:db8:0:1::5"), Accepted: 1},
		{Addr: netip.MustParseAddr("2001:db8:0:1:ffff::9"), Handshakes: 1},
	}
	g := GroupByPrefix(addrs, DefaultPrefixLen)
	var got []string
	for _, p := range g {
		got = append(got, fmt.Sprintf("%s n=%d acc=%d syns=%d drops=%d hs=%d", p.Prefix, p.Addresses, p.Accepted, p.Syns, p.Drops, p.Handshakes))
	}
	want := []string{
		"192.0.3.0/24 n=1 acc=5 syns=0 drops=0 hs=0",
		"192.0.2.0/24 n=2 acc=3 syns=4 drops=1 hs=0",
		"2001:db8:0:1::/64 n=2 acc=1 syns=0 drops=0 hs=1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("groups:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	p := g[1]
	if !p.First.Equal(at(2)) || !p.Last.Equal(at(9)) || p.Wait.Count != 3 || p.Wait.Max != 3*time.Millisecond {
		t.Errorf("192.0.2.0/24 times and waits: %+v", p)
	}
}

func TestParsePrefixLen(t *testing.T) {
	for in, want := range map[string]PrefixLen{"24,64": {24, 64}, "16": {16, 64}, "/8,/48": {8, 48}, "32,128": {32, 128}, " 0 , 0": {0, 0}} {
		if got, err := ParsePrefixLen(in); err != nil || got != want {
			t.Errorf("ParsePrefixLen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "33", "24,129", "x", "24,", "-1"} {
		if _, err := ParsePrefixLen(in); err == nil {
			t.Errorf("ParsePrefixLen(%q): no error", in)
		}
	}
}
