package report

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// PrefixLen says how addresses group into networks: IPv4 addresses by their
// first V4 bits, IPv6 by their first V6.
type PrefixLen struct{ V4, V6 int }

// DefaultPrefixLen groups as admins do by hand: /24 and /64.
var DefaultPrefixLen = PrefixLen{V4: 24, V6: 64}

func (p PrefixLen) String() string { return fmt.Sprintf("%d,%d", p.V4, p.V6) }

// ParsePrefixLen reads "24,64", "24" (IPv6 stays /64) or "/16,/48".
func ParsePrefixLen(s string) (PrefixLen, error) {
	p := DefaultPrefixLen
	v4, v6, two := strings.Cut(s, ",")
	n, err := prefixBits(v4, 32)
	if err != nil {
		return p, fmt.Errorf("invalid IPv4 prefix length %q: %w", v4, err)
	}
	p.V4 = n
	if two {
		if p.V6, err = prefixBits(v6, 128); err != nil {
			return p, fmt.Errorf("invalid IPv6 prefix length %q: %w", v6, err)
		}
	}
	return p, nil
}

func prefixBits(s string, max int) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(s), "/"))
	if err != nil {
		return 0, fmt.Errorf("not a number")
	}
	if n < 0 || n > max {
		return 0, fmt.Errorf("must be 0-%d", max)
	}
	return n, nil
}

// Of returns the network that holds a.
func (p PrefixLen) Of(a netip.Addr) netip.Prefix {
	a = Normalize(a)
	bits := p.V6
	if a.Is4() {
		bits = p.V4
	}
	pfx, _ := a.Prefix(bits)
	return pfx
}

// PrefixStats adds up the addresses of one network. AddrStats holds the
// sums (Addr is the network's first address; First and Last the earliest
// and latest). Queue-wait percentiles are not kept per network (the kernel's
// histograms are per address): Wait has Count and Max only.
type PrefixStats struct {
	Prefix    netip.Prefix
	Addresses uint64 // distinct addresses seen
	AddrStats
}

// GroupByPrefix adds addrs up per network, sorted as SortAddresses sorts
// addresses (by accepts, then handshakes, then network).
func GroupByPrefix(addrs []AddrStats, p PrefixLen) []PrefixStats {
	// A network is grouped within its namespace: never across two.
	type key struct {
		pfx   netip.Prefix
		netns uint32
	}
	idx := map[key]int{}
	var out []PrefixStats
	for _, a := range addrs {
		pfx := p.Of(a.Addr)
		i, ok := idx[key{pfx, a.NetNS}]
		if !ok {
			i = len(out)
			idx[key{pfx, a.NetNS}] = i
			out = append(out, PrefixStats{Prefix: pfx, AddrStats: AddrStats{Addr: pfx.Addr(), NetNS: a.NetNS}})
		}
		g := &out[i]
		g.Addresses++
		g.Accepted += a.Accepted
		g.Handshakes += a.Handshakes
		g.NotAccepted += a.NotAccepted
		g.ClientGone += a.ClientGone
		g.SynackRetrans += a.SynackRetrans
		g.Syns += a.Syns
		g.Drops += a.Drops
		g.Open += a.Open
		g.SynRecv += a.SynRecv
		if a.Wait.Count > 0 && (g.Wait.Count == 0 || a.Wait.Min < g.Wait.Min) {
			g.Wait.Min = a.Wait.Min
		}
		g.Wait.Count += a.Wait.Count
		g.Wait.Max = max(g.Wait.Max, a.Wait.Max)
		if !a.First.IsZero() && (g.First.IsZero() || a.First.Before(g.First)) {
			g.First = a.First
		}
		if a.Last.After(g.Last) {
			g.Last = a.Last
		}
	}
	slices.SortStableFunc(out, func(a, b PrefixStats) int {
		if c := cmp.Compare(b.Accepted, a.Accepted); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Handshakes, a.Handshakes); c != 0 {
			return c
		}
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
	return out
}
