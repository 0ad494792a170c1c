package baseline

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

// Thresholds say when a rate is far enough above its baseline to report.
type Thresholds struct {
	Factor float64 // rate (or queue wait, or SYNs per handshake) at least this many times the baseline's
	Min    uint64  // and at least this many SYNs or accepts (or waits) in the window
}

// compareAddresses is how many of a window's top addresses are compared.
const compareAddresses = 10

// maxLines bounds the lines of one kind.
const maxLines = 5

// Compare returns one finding line per port, address or ratio of s that is
// far above the baseline f (or absent from it).
func Compare(f *File, s report.Summary, th Thresholds) []string {
	secs := s.End.Sub(s.Start).Seconds()
	if secs <= 0 {
		return nil
	}
	rate := func(n uint64) float64 { return float64(n) / secs }
	var out []string
	// above says "840 accepts/s, baseline 25/s" when now is far above base.
	above := func(what string, n uint64, base *float64) (string, bool) {
		if n < max(th.Min, 1) {
			return "", false
		}
		r := rate(n)
		if base == nil {
			return "", false // not counted in the baseline: nothing to compare
		}
		if *base > 0 && r < th.Factor**base {
			return "", false
		}
		return fmt.Sprintf("%s %s/s, baseline %s/s", report.FormatRate(r), what, report.FormatRate(*base)), true
	}

	type portKey struct {
		ns   string
		port uint16
	}
	ports := map[portKey]Listener{}
	for _, l := range f.Listeners {
		ports[portKey{nsKey(l.NetNS), l.Port}] = l
	}
	for _, p := range s.Listeners {
		l, ok := ports[portKey{nsKey(report.NetNSLabel(s.NetNSNames, p.NetNS)), p.Port}]
		if !ok {
			if n := max(p.Accepted, p.Syns); n >= max(th.Min, 1) {
				out = append(out, fmt.Sprintf("port %d: %s accepts/s, %s: port not in baseline", p.Port, report.FormatRate(rate(p.Accepted)), synsRate(s, p.Syns, rate)))
			}
			continue
		}
		if msg, ok := above("accepts", p.Accepted, &l.AcceptsPerS); ok {
			out = append(out, fmt.Sprintf("port %d: %s", p.Port, msg))
		} else if msg, ok := above("SYNs", p.Syns, synsIf(s, l.SynsPerS)); ok {
			out = append(out, fmt.Sprintf("port %d: %s", p.Port, msg))
		}
		if l.WaitP99Us != nil && p.Wait.Count >= max(th.Min, 1) {
			base := time.Duration(*l.WaitP99Us) * time.Microsecond
			// A base under 1 ms is scheduling noise: compare with 1 ms.
			if p.Wait.P99.Est() >= time.Duration(th.Factor*float64(max(base, time.Millisecond))) {
				out = append(out, fmt.Sprintf("port %d: queue wait p99 %s, baseline %s", p.Port,
					report.FormatQuantile(p.Wait.P99), report.FormatDuration(base)))
			}
		}
	}

	if f.SynsPerHandshake != nil && s.SynsCounted() && s.TotalSyns >= max(th.Min, 1) {
		base := *f.SynsPerHandshake
		now := float64(s.TotalSyns) / float64(max(s.TotalHandshakes, 1))
		if now >= th.Factor*max(base, 1) {
			out = append(out, fmt.Sprintf("%.1f SYNs per completed handshake, baseline %.1f: handshakes are not completing (SYN flood?)", now, base))
		}
	}

	type addrKey struct {
		ns string
		ip netip.Addr
	}
	known := map[addrKey]Address{}
	for _, a := range f.Addresses {
		ip, _ := parseAddr(a.Addr)
		known[addrKey{nsKey(a.NetNS), ip}] = a
	}
	complete := f.AddressesSeen <= len(f.Addresses)
	var lines []string
	for _, a := range topAddresses(s.Addresses, compareAddresses) {
		n := max(a.Syns, a.Accepted)
		if n < max(th.Min, 1) {
			break // sorted by SYNs plus accepts: the rest are smaller still
		}
		ip := report.Normalize(a.Addr)
		b, ok := known[addrKey{nsKey(report.NetNSLabel(s.NetNSNames, a.NetNS)), ip}]
		if !ok {
			where := "not in baseline"
			if !complete {
				where = fmt.Sprintf("not among the baseline's top %d", len(f.Addresses))
			}
			lines = append(lines, fmt.Sprintf("%s: new top address, %s (%s accepts/s, %s)", ip, where, report.FormatRate(rate(a.Accepted)), synsRate(s, a.Syns, rate)))
			continue
		}
		if msg, ok := above("accepts", a.Accepted, &b.AcceptsPerS); ok {
			lines = append(lines, fmt.Sprintf("%s: %s", ip, msg))
		} else if msg, ok := above("SYNs", a.Syns, synsIf(s, b.SynsPerS)); ok {
			lines = append(lines, fmt.Sprintf("%s: %s", ip, msg))
		}
	}
	if len(lines) > maxLines {
		lines = append(lines[:maxLines], fmt.Sprintf("… and %d more addresses above the baseline", len(lines)-maxLines))
	}
	return append(out, lines...)
}

// synsIf is the baseline's SYN rate when this run counts SYNs too.
func synsIf(s report.Summary, base *float64) *float64 {
	if !s.SynsCounted() {
		return nil
	}
	return base
}

func synsRate(s report.Summary, n uint64, rate func(uint64) float64) string {
	if !s.SynsCounted() {
		return "SYNs not counted"
	}
	return report.FormatRate(rate(n)) + " SYNs/s"
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("invalid address %q", s)
	}
	return report.Normalize(a), nil
}
