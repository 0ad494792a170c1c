package baseline

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

var t0 = time.Date(2026, 11, 21, 20, 0, 0, 0, time.UTC)

// normal is 100 s of a quiet server: port 443 at 25 accepts/s.
func normal() report.Summary {
	s := report.Summary{
		Start: t0, End: t0.Add(100 * time.Second), AttachMode: "tracepoint", Ports: []string{"443"},
		SynCounter: "cgroup_skb", TotalAccepted: 2500, TotalHandshakes: 2500, TotalSyns: 2550,
		Listeners: []report.PortStats{{Port: 443, Accepted: 2500, Syns: 2550,
			Wait: report.Wait{Count: 2500, P50: report.Quantile{Lo: 63 * time.Microsecond, Hi: 65 * time.Microsecond},
				P99: report.Quantile{Lo: 1950 * time.Microsecond, Hi: 2050 * time.Microsecond}, Max: 3 * time.Millisecond}}},
	}
	for i := 1; i <= 5; i++ {
		s.Addresses = append(s.Addresses, report.AddrStats{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Accepted: 500, Handshakes: 500, Syns: 510})
	}
	return s
}

func TestSaveLoad(t *testing.T) {
	f := FromSummary(normal())
	path := filepath.Join(t.TempDir(), "b.json")
	if err := CheckWritable(path); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	g, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f, g) {
		t.Errorf("loaded %+v\nsaved %+v", g, f)
	}
	if g.Format != Format || g.Version != 1 || g.DurationS != 100 || g.Totals.AcceptsPerS != 25 || *g.Totals.SynsPerS != 25.5 ||
		*g.SynsPerHandshake != 1.02 || len(g.Listeners) != 1 || *g.Listeners[0].WaitP99Us != 2000 || len(g.Addresses) != 5 || g.AddressesSeen != 5 {
		t.Errorf("baseline %+v", g)
	}
	// Without SYNs: nulls, not zeros.
	s := normal()
	s.SynCounter = ""
	b := FromSummary(s)
	if b.Totals.SynsPerS != nil || b.SynsPerHandshake != nil || b.Listeners[0].SynsPerS != nil || b.Addresses[0].SynsPerS != nil {
		t.Errorf("SYN rates without SYNs: %+v", b)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	good, _ := os.ReadFile(writeBaseline(t, dir))
	for name, tc := range map[string]struct{ content, want string }{
		"garbage":     {"not json\n", "not a baseline file: line 1: invalid character"},
		"truncated":   {string(good[:len(good)/2]), "not a baseline file: line "},
		"other json":  {`{"a": 1}`, `not a baseline file (format "", want "acceptwatch-baseline")`},
		"newer":       {`{"format": "acceptwatch-baseline", "version": 2}`, "version 2, this acceptwatch reads versions 1 to 1"},
		"no duration": {`{"format": "acceptwatch-baseline", "version": 1}`, "duration_s 0: must be above 0"},
		"wrong type":  {`{"format": "acceptwatch-baseline", "version": 1, "duration_s": "ten"}`, "field duration_s: string where float64 belongs"},
		"negative":    {`{"format": "acceptwatch-baseline", "version": 1, "duration_s": 1, "totals": {"accepts_per_s": -1}}`, "rates must be 0 or more"},
		"bad address": {`{"format": "acceptwatch-baseline", "version": 1, "duration_s": 1, "addresses": [{"addr": "x"}]}`, `invalid address "x"`},
		"no port":     {`{"format": "acceptwatch-baseline", "version": 1, "duration_s": 1, "listeners": [{"accepts_per_s": 1}]}`, "listeners: port 0"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(path, []byte(tc.content), 0o644)
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "baseline "+path+": ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line about %s naming %q", name, err, path, tc.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if err := CheckWritable(filepath.Join(dir, "no", "such", "dir", "b.json")); err == nil {
		t.Error("CheckWritable in a missing directory: no error")
	}
	if err := CheckWritable(dir); err == nil {
		t.Error("CheckWritable on a directory: no error")
	}
}

func writeBaseline(t *testing.T, dir string) string {
	path := filepath.Join(dir, "good.json")
	if err := FromSummary(normal()).Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCompare(t *testing.T) {
	f := FromSummary(normal())
	th := Thresholds{Factor: 3, Min: 100}

	// The same traffic again: nothing.
	if got := Compare(f, normal(), th); len(got) != 0 {
		t.Errorf("findings for the baseline's own traffic: %q", got)
	}

	// Ten seconds of 840 accepts/s, mostly from a new address, slower accepts.
	s := report.Summary{Start: t0, End: t0.Add(10 * time.Second), SynCounter: "cgroup_skb",
		TotalAccepted: 8400, TotalHandshakes: 8400, TotalSyns: 33600,
		Listeners: []report.PortStats{
			{Port: 443, Accepted: 8400, Syns: 16800, Wait: report.Wait{Count: 8400, P99: report.Quantile{Lo: 400 * time.Millisecond, Hi: 400 * time.Millisecond}}},
			{Port: 8080, Accepted: 150, Syns: 150},
		},
		Addresses: []report.AddrStats{
			{Addr: netip.MustParseAddr("127.0.0.9"), Accepted: 8000, Handshakes: 8000, Syns: 16000},
			{Addr: netip.MustParseAddr("::ffff:192.0.2.1"), Accepted: 400, Handshakes: 400, Syns: 800},
			{Addr: netip.MustParseAddr("192.0.2.2"), Accepted: 50, Handshakes: 50, Syns: 50},
		},
	}
	got := Compare(f, s, th)
	want := []string{
		"port 443: 840 accepts/s, baseline 25/s",
		"port 443: queue wait p99 400ms, baseline 2ms",
		"port 8080: 15 accepts/s, 15 SYNs/s: port not in baseline",
		"4.0 SYNs per completed handshake, baseline 1.0: handshakes are not completing (SYN flood?)",
		"127.0.0.9: new top address, not in baseline (800 accepts/s, 1600 SYNs/s)",
		"192.0.2.1: 40 accepts/s, baseline 5.0/s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Twice its baseline is under the factor: not named.
	s.Addresses[1].Accepted, s.Addresses[1].Syns = 100, 100
	if got := Compare(f, s, th); contains(got, "192.0.2.1") {
		t.Errorf("192.0.2.1 at twice its baseline named: %q", got)
	}
	// A baseline that kept only its top addresses says so.
	f.AddressesSeen = 500
	if got := Compare(f, s, th); !contains(got, "127.0.0.9: new top address, not among the baseline's top 5 (") {
		t.Errorf("incomplete baseline: %q", got)
	}
	// SYNs not counted now: no SYN comparisons.
	s.SynCounter = ""
	for _, l := range Compare(f, s, th) {
		if strings.Contains(l, "SYNs per") {
			t.Errorf("SYN comparison without SYNs: %q", l)
		}
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want || strings.HasPrefix(l, want) {
			return true
		}
	}
	return false
}
