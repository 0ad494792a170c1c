package report

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Thresholds say when a summary's numbers are worth a finding.
type Thresholds struct {
	Wait     time.Duration // queue wait p99 on a port above this
	HalfOpen uint64        // SYN-ACK retransmits from one address at or above this

	// An address or network is named as a flood source when it sent at
	// least FloodMin SYNs (or accepts, or half-open handshakes) in the
	// window and either FloodFactor times the median of the others, or,
	// among three or more, a FloodShare of them all. FloodMin keeps three
	// connections from ever being a flood.
	FloodMin    uint64
	FloodFactor float64
	FloodShare  float64
	Prefix      PrefixLen // networks for the per-network findings
}

// DefaultThresholds are the command's defaults.
var DefaultThresholds = Thresholds{
	Wait: 100 * time.Millisecond, HalfOpen: 10,
	FloodMin: 100, FloodFactor: 10, FloodShare: 0.8, Prefix: DefaultPrefixLen,
}

// maxLines bounds the lines of one kind of finding in a flood.
const maxLines = 5

// Findings lists, one line each, what in s looks wrong: slow accepts,
// overflowing queues, flood sources (per address and per network),
// half-open handshakes, lost live events.
func Findings(s Summary, th Thresholds) []string {
	var out []string
	multi := s.Namespaces() > 1
	for _, p := range s.Listeners {
		port := fmt.Sprintf("port %d", p.Port)
		if multi {
			port += " in netns " + NetNSLabel(s.NetNSNames, p.NetNS)
		}
		if p.Wait.Count > 0 && th.Wait > 0 && p.Wait.P99.Est() > th.Wait {
			out = append(out, fmt.Sprintf("%s: queue wait p99 %s is over %s: the server is slow to accept()",
				port, FormatQuantile(p.Wait.P99), FormatDuration(th.Wait)))
		}
		if p.BacklogLimit > 0 && p.BacklogMax > p.BacklogLimit {
			out = append(out, fmt.Sprintf("%s: accept queue reached its limit (%d/%d)", port, p.BacklogMax, p.BacklogLimit))
		}
		if p.NotAccepted > 0 {
			out = append(out, fmt.Sprintf("%s: %d connections completed the handshake but closed before any accept()",
				port, p.NotAccepted))
		}
	}
	counter := map[string]uint64{}
	for _, c := range s.KernelCounters {
		counter[c.Name] = c.Delta
	}
	if n := counter["ListenOverflows"]; n > 0 {
		out = append(out, fmt.Sprintf("accept queues overflowed %d times (ListenOverflows): handshakes were dropped; raise the listen backlog or accept faster", n))
	}
	if s.DropsCounted() && s.TotalDrops > 0 {
		out = append(out, dropsByAddress(s))
	}
	if n := counter["TCPReqQFullDrop"]; n > 0 {
		out = append(out, fmt.Sprintf("SYN queues were full: %d SYNs dropped (TCPReqQFullDrop)", n))
	}
	if n := counter["SyncookiesSent"]; n > 0 {
		out = append(out, fmt.Sprintf("%d SYN cookies sent: a SYN queue overflowed (SYN flood?)", n))
	}
	if multi {
		// Each namespace's addresses against each other only: one
		// namespace's clients are no median for another's.
		byNS := map[uint32][]AddrStats{}
		var order []uint32
		for _, a := range s.Addresses {
			if byNS[a.NetNS] == nil {
				order = append(order, a.NetNS)
			}
			byNS[a.NetNS] = append(byNS[a.NetNS], a)
		}
		slices.Sort(order)
		for _, ns := range order {
			sub := s
			sub.Addresses = byNS[ns]
			for _, f := range floodFindings(sub, th) {
				out = append(out, "netns "+NetNSLabel(s.NetNSNames, ns)+": "+f)
			}
		}
	} else {
		out = append(out, floodFindings(s, th)...)
	}
	if s.LostEvents > 0 {
		out = append(out, fmt.Sprintf("%d live events lost (ring buffer full): some live lines are missing, the counts are exact", s.LostEvents))
	}
	return out
}

// dropsByAddress names the addresses whose connection attempts the full
// accept queues dropped, most first.
func dropsByAddress(s Summary) string {
	var d []AddrStats
	for _, a := range s.Addresses {
		if a.Drops > 0 {
			d = append(d, a)
		}
	}
	sortBy(d, func(a AddrStats) uint64 { return a.Drops })
	var parts []string
	for i, a := range d {
		if i == maxLines {
			parts = append(parts, fmt.Sprintf("and %d more addresses", len(d)-i))
			break
		}
		who := Normalize(a.Addr).String()
		if s.Namespaces() > 1 {
			who += " (netns " + NetNSLabel(s.NetNSNames, a.NetNS) + ")"
		}
		parts = append(parts, fmt.Sprintf("%s %d", who, a.Drops))
	}
	return fmt.Sprintf("dropped for a full accept queue (%s), by address: %s", DropWhat(s.DropCounters), strings.Join(parts, ", "))
}

// DropWhat names what drop counters count: "SYNs and final ACKs".
func DropWhat(counters []string) string {
	var w []string
	for _, c := range counters {
		switch c {
		case "syn":
			w = append(w, "SYNs")
		case "final_ack":
			w = append(w, "final ACKs")
		}
	}
	return strings.Join(w, " and ")
}

// A metric is one count of an address or network that can mark a flood.
type metric struct {
	name string // "SYNs", "accepts"
	of   func(AddrStats) uint64
}

var (
	synsMetric    = metric{"SYNs", func(a AddrStats) uint64 { return a.Syns }}
	acceptsMetric = metric{"accepts", func(a AddrStats) uint64 { return a.Accepted }}
	// SYNs that did not complete a handshake (SYN retries of one
	// connection count too: a lossy client sends a few).
	halfOpenMetric = metric{"half-open", func(a AddrStats) uint64 {
		if a.Syns > a.Handshakes {
			return a.Syns - a.Handshakes
		}
		return 0
	}}
)

// floodFindings names the addresses and networks far above the rest in
// SYNs or accepts, and those whose SYNs mostly did not complete a handshake.
func floodFindings(s Summary, th Thresholds) []string {
	var out []string
	secs := s.End.Sub(s.Start).Seconds()
	addrs := s.Addresses
	groups := GroupByPrefix(addrs, th.Prefix)
	nets := make([]AddrStats, len(groups))
	group := make(map[netip.Prefix]int, len(groups))
	for i, g := range groups {
		nets[i] = g.AddrStats
		group[g.Prefix] = i
	}
	// The biggest address of each network, per metric: a network that is
	// mostly one address already named is not named again.
	top := func(m metric) map[netip.Prefix]netip.Addr {
		best := map[netip.Prefix]AddrStats{}
		for _, a := range addrs {
			p := th.Prefix.Of(a.Addr)
			if b, ok := best[p]; !ok || m.of(a) > m.of(b) {
				best[p] = a
			}
		}
		res := map[netip.Prefix]netip.Addr{}
		for p, a := range best {
			if 2*m.of(a) >= m.of(nets[group[p]]) {
				res[p] = Normalize(a.Addr)
			}
		}
		return res
	}

	metrics := []metric{acceptsMetric}
	if s.SynsCounted() {
		metrics = []metric{synsMetric, acceptsMetric}
	}
	named := map[netip.Addr]bool{}
	totals := map[string]uint64{}
	for _, m := range metrics {
		for _, a := range addrs {
			totals[m.name] += m.of(a)
		}
	}
	for _, m := range metrics {
		var lines []string
		for _, o := range outliers(addrs, m, th) {
			a := addrs[o.i]
			if named[Normalize(a.Addr)] {
				continue
			}
			named[Normalize(a.Addr)] = true
			lines = append(lines, fmt.Sprintf("%s: %s: far more than the other addresses (median %s)",
				Normalize(a.Addr), amount(m, a, totals[m.name], secs), num(o.median)))
		}
		out = append(out, capLines(lines, "addresses far above the rest in "+m.name)...)
	}
	namedNet := map[netip.Prefix]bool{}
	for _, m := range metrics {
		var lines []string
		var biggest map[netip.Prefix]netip.Addr
		for _, o := range outliers(nets, m, th) {
			g := groups[o.i]
			if g.Addresses < 2 || namedNet[g.Prefix] {
				continue
			}
			namedNet[g.Prefix] = true
			if biggest == nil {
				biggest = top(m)
			}
			if a, ok := biggest[g.Prefix]; ok && named[a] {
				continue
			}
			lines = append(lines, fmt.Sprintf("%s: %s from %d addresses: far more than the other networks (median %s)",
				g.Prefix, amount(m, g.AddrStats, totals[m.name], secs), g.Addresses, num(o.median)))
		}
		out = append(out, capLines(lines, "networks far above the rest in "+m.name)...)
	}

	// Half-open: SYNs without a completed handshake, most of an address's.
	if s.SynsCounted() {
		var lines []string
		halfNamed := map[netip.Addr]bool{}
		for _, a := range halfOpen(addrs, th.FloodMin) {
			halfNamed[Normalize(a.Addr)] = true
			lines = append(lines, fmt.Sprintf("%s: %d SYNs, %d completed handshakes, %d SYN-ACK retransmits: half-open handshakes (SYN flood?)",
				Normalize(a.Addr), a.Syns, a.Handshakes, a.SynackRetrans))
		}
		out = append(out, capLines(lines, "addresses with half-open handshakes")...)
		lines = nil
		var biggest map[netip.Prefix]netip.Addr
		halfNets := map[netip.Prefix]bool{}
		for _, g := range halfOpen(nets, th.FloodMin) {
			i := group[th.Prefix.Of(g.Addr)]
			if groups[i].Addresses < 2 {
				continue
			}
			if biggest == nil {
				biggest = top(halfOpenMetric)
			}
			if a, ok := biggest[groups[i].Prefix]; ok && halfNamed[a] {
				continue
			}
			lines = append(lines, fmt.Sprintf("%s: %d SYNs from %d addresses, %d completed handshakes: half-open handshakes (SYN flood from one network?)",
				groups[i].Prefix, g.Syns, groups[i].Addresses, g.Handshakes))
			halfNets[groups[i].Prefix] = true
		}
		out = append(out, capLines(lines, "networks with half-open handshakes")...)
		// Addresses of a named network are not named one by one again.
		if len(halfNets) > 0 {
			for _, a := range addrs {
				if halfNets[th.Prefix.Of(a.Addr)] {
					halfNamed[Normalize(a.Addr)] = true
				}
			}
		}
		// SYN-ACK retransmits of addresses not named above.
		out = append(out, synackFindings(addrs, th, halfNamed)...)
	} else {
		out = append(out, synackFindings(addrs, th, nil)...)
	}
	return out
}

// halfOpen returns the rows with at least min SYNs that did not complete a
// handshake, and those the majority of their SYNs, most first.
func halfOpen(rows []AddrStats, min uint64) []AddrStats {
	var res []AddrStats
	for _, a := range rows {
		h := halfOpenMetric.of(a)
		if h >= max(min, 1) && 2*h >= a.Syns {
			res = append(res, a)
		}
	}
	sortBy(res, halfOpenMetric.of)
	return res
}

func synackFindings(addrs []AddrStats, th Thresholds, skip map[netip.Addr]bool) []string {
	var flood []AddrStats
	for _, a := range addrs {
		if th.HalfOpen > 0 && a.SynackRetrans >= th.HalfOpen && !skip[Normalize(a.Addr)] {
			flood = append(flood, a)
		}
	}
	sortBy(flood, func(a AddrStats) uint64 { return a.SynackRetrans })
	var out []string
	for i, a := range flood {
		if i == maxLines {
			out = append(out, fmt.Sprintf("… and %d more addresses with %d or more SYN-ACK retransmits", len(flood)-i, th.HalfOpen))
			break
		}
		out = append(out, fmt.Sprintf("%s: %d SYN-ACK retransmits: handshakes left half-open (SYN flood or lossy client)",
			Normalize(a.Addr), a.SynackRetrans))
	}
	return out
}

// amount says "1500 SYNs (300/s, 94% of all)".
func amount(m metric, a AddrStats, total uint64, secs float64) string {
	n := m.of(a)
	var extra []string
	if secs > 0 {
		extra = append(extra, FormatRate(float64(n)/secs)+"/s")
	}
	if total > 0 {
		extra = append(extra, fmt.Sprintf("%.0f%% of all", 100*float64(n)/float64(total)))
	}
	return fmt.Sprintf("%d %s (%s)", n, m.name, strings.Join(extra, ", "))
}

func capLines(lines []string, what string) []string {
	if len(lines) > maxLines {
		return append(lines[:maxLines], fmt.Sprintf("… and %d more %s", len(lines)-maxLines, what))
	}
	return lines
}

// outlier is a row far above the rest, and the median of the rest.
type outlier struct {
	i      int
	median uint64
}

// outliers returns the rows far above the rest in m (see Thresholds),
// biggest first.
func outliers(rows []AddrStats, m metric, th Thresholds) []outlier {
	if len(rows) < 2 {
		return nil // no rest to be far above
	}
	var total uint64
	for _, r := range rows {
		total += m.of(r)
	}
	var res []outlier
	var sorted []uint64
	for i, r := range rows {
		n := m.of(r)
		if n < max(th.FloodMin, 1) {
			continue
		}
		if sorted == nil {
			sorted = sortedCounts(rows, m)
		}
		med := medianWithout(sorted, n)
		byFactor := th.FloodFactor > 0 && float64(n) >= th.FloodFactor*med
		byShare := th.FloodShare > 0 && len(rows) >= 3 && float64(n) >= th.FloodShare*float64(total)
		if byFactor || byShare {
			res = append(res, outlier{i, uint64(med + 0.5)})
		}
	}
	sort.SliceStable(res, func(a, b int) bool { return m.of(rows[res[a].i]) > m.of(rows[res[b].i]) })
	return res
}

func sortedCounts(rows []AddrStats, m metric) []uint64 {
	v := make([]uint64, len(rows))
	for i, r := range rows {
		v[i] = m.of(r)
	}
	slices.Sort(v)
	return v
}

// medianWithout is the median of sorted without one occurrence of n.
func medianWithout(sorted []uint64, n uint64) float64 {
	k, _ := slices.BinarySearch(sorted, n)
	at := func(j int) float64 {
		if j >= k {
			j++
		}
		return float64(sorted[j])
	}
	m := len(sorted) - 1
	if m%2 == 1 {
		return at(m / 2)
	}
	return (at(m/2-1) + at(m/2)) / 2
}
