// Package report formats acceptwatch output: live lines for accepted TCP
// connections and per-remote-address summaries, as text or as JSON lines.
//
// Writers are not safe for concurrent use; callers serialise Event and
// Summary calls. Every Event and Summary call issues exactly one Write on
// the underlying io.Writer and returns its error unchanged, so a caller can
// detect EPIPE on a closed stdout and stop quietly.
package report

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// Event is one accepted connection.
type Event struct {
	Time       time.Time
	PID        uint32
	Comm       string     // raw from the kernel: may hold control chars/invalid UTF-8
	LocalAddr  netip.Addr // already normalised: IPv4 clients of dual-stack listeners arrive as 4-byte addrs, but Normalize anyway
	LocalPort  uint16
	RemoteAddr netip.Addr
	RemotePort uint16
}

// AddrStats is one remote address's counts over a summary window.
type AddrStats struct {
	Addr       netip.Addr
	Accepted   uint64
	Handshakes uint64
	First      time.Time // zero if unknown
	Last       time.Time
}

// Summary covers one window ([Start, End]): the whole run, or one --interval.
type Summary struct {
	Start, End      time.Time
	AttachMode      string      // "fexit", "kretprobe", "tracepoint"
	Ports           []string    // as the user gave them, normalised: "80", "8000-8100"; empty = all ports
	Addresses       []AddrStats // any order; the writers sort
	TotalAccepted   uint64      // includes accepts that overflowed the address map
	TotalHandshakes uint64
	LostEvents      uint64 // live events the kernel could not queue (ring buffer full)
	AddressOverflow uint64 // accepts+handshakes not attributed to an address because the map was full
	MaxAddresses    uint32 // capacity of the address map (for the hint in the overflow line)
	Final           bool   // true for the end-of-run summary, false for --interval windows
}

// Writer receives live events and summaries.
type Writer interface {
	Event(Event) error
	Summary(Summary) error
}

// Normalize unmaps IPv4-mapped IPv6 addresses (::ffff:a.b.c.d -> a.b.c.d)
// and drops any IPv6 zone. The zero Addr is returned unchanged.
func Normalize(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// family returns 4 or 6 for the normalised address, 0 if it is invalid.
func family(a netip.Addr) int {
	switch {
	case a.Is4():
		return 4
	case a.Is6():
		return 6
	}
	return 0
}

// SortAddresses sorts in place by Accepted descending, then Handshakes
// descending, then address ascending, so ties are deterministic.
func SortAddresses(s []AddrStats) {
	slices.SortStableFunc(s, func(a, b AddrStats) int {
		if c := cmp.Compare(b.Accepted, a.Accepted); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Handshakes, a.Handshakes); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
}

// prepare returns a sorted copy of addrs with every address normalised.
// Entries that normalise to the same address (e.g. ::ffff:10.0.0.1 and
// 10.0.0.1) are merged: counts add up, First is the earliest known time and
// Last the latest. The caller's slice is not modified.
func prepare(addrs []AddrStats) []AddrStats {
	out := make([]AddrStats, 0, len(addrs))
	idx := make(map[netip.Addr]int, len(addrs))
	for _, s := range addrs {
		s.Addr = Normalize(s.Addr)
		i, ok := idx[s.Addr]
		if !ok {
			idx[s.Addr] = len(out)
			out = append(out, s)
			continue
		}
		m := &out[i]
		m.Accepted += s.Accepted
		m.Handshakes += s.Handshakes
		if !s.First.IsZero() && (m.First.IsZero() || s.First.Before(m.First)) {
			m.First = s.First
		}
		if s.Last.After(m.Last) {
			m.Last = s.Last
		}
	}
	SortAddresses(out)
	return out
}
