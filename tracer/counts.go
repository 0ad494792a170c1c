package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/acceptwatch/acceptwatch/report"
)

// Counts is what the kernel counted over a window; exact even when live
// events were lost.
type Counts struct {
	Start, End      time.Time
	Addresses       []report.AddrStats
	TotalAccepted   uint64 // including accepts the full address map could not attribute
	TotalHandshakes uint64
	LostEvents      uint64
	AddressOverflow uint64
}

type prevCounts struct{ accepted, handshakes uint64 }

// Total returns everything counted since the tracer started.
func (t *Tracer) Total() (Counts, error) {
	c := Counts{Start: t.start, End: time.Now()}
	stats, err := t.readStats()
	if err != nil {
		return c, err
	}
	err = t.eachAddr(func(k [16]byte, v *acceptwatchAddrStats) {
		c.Addresses = append(c.Addresses, report.AddrStats{
			Addr:       addrOfKey(k),
			Accepted:   v.Accepted,
			Handshakes: v.Handshakes,
			First:      t.wall(v.FirstNs),
			Last:       t.wall(v.LastNs),
		})
	})
	c.fill(stats)
	return c, err
}

// Window returns what was counted since the previous Window call (or the
// start) and begins a new window.
func (t *Tracer) Window() (Counts, error) {
	c := Counts{Start: t.windowStart, End: time.Now()}
	stats, err := t.readStats()
	if err != nil {
		return c, err
	}
	current := t.windowID
	err = t.eachAddr(func(k [16]byte, v *acceptwatchAddrStats) {
		p := t.prev[k]
		if v.Accepted == p.accepted && v.Handshakes == p.handshakes {
			return
		}
		first := v.WindowFirstNs
		if v.Window != current {
			// Touched only after the window closed below; its first time in
			// this window is not known closer than the window's start.
			first = 0
		}
		a := report.AddrStats{
			Addr:       addrOfKey(k),
			Accepted:   v.Accepted - p.accepted,
			Handshakes: v.Handshakes - p.handshakes,
			First:      t.wall(first),
			Last:       t.wall(v.LastNs),
		}
		if first == 0 || a.First.Before(c.Start) {
			a.First = c.Start
		}
		c.Addresses = append(c.Addresses, a)
		t.prev[k] = prevCounts{v.Accepted, v.Handshakes}
	})
	if err != nil {
		return c, err
	}
	var delta [acceptwatchStatSTAT_MAX]uint64
	for i := range stats {
		delta[i] = stats[i] - t.prevStats[i]
	}
	t.prevStats = stats
	c.fill(delta)

	t.windowID++
	if t.window != nil {
		if err := t.window.Set(t.windowID); err != nil {
			return c, fmt.Errorf("starting a new window: %w", err)
		}
	}
	t.windowStart = c.End
	return c, nil
}

func (c *Counts) fill(stats [acceptwatchStatSTAT_MAX]uint64) {
	for _, a := range c.Addresses {
		c.TotalAccepted += a.Accepted
		c.TotalHandshakes += a.Handshakes
	}
	c.TotalAccepted += stats[acceptwatchStatSTAT_OVERFLOW_ACCEPTS]
	c.TotalHandshakes += stats[acceptwatchStatSTAT_OVERFLOW_HANDSHAKES]
	c.LostEvents = stats[acceptwatchStatSTAT_LOST_EVENTS]
	c.AddressOverflow = stats[acceptwatchStatSTAT_OVERFLOW_ACCEPTS] + stats[acceptwatchStatSTAT_OVERFLOW_HANDSHAKES]
}

func (t *Tracer) readStats() ([acceptwatchStatSTAT_MAX]uint64, error) {
	var out [acceptwatchStatSTAT_MAX]uint64
	for i := range out {
		var perCPU []uint64
		if err := t.stats.Lookup(uint32(i), &perCPU); err != nil {
			return out, fmt.Errorf("reading drop counters: %w", err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// eachAddr visits every entry of the address map, in batches where the
// kernel supports it (1M entries one by one take seconds).
func (t *Tracer) eachAddr(fn func([16]byte, *acceptwatchAddrStats)) error {
	const batch = 4096
	keys := make([]acceptwatchAddrKey, batch)
	vals := make([]acceptwatchAddrStats, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.addrs.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(keys[i].Addr, &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("reading address counters: %w", err)
		}
	}
	var k acceptwatchAddrKey
	var v acceptwatchAddrStats
	it := t.addrs.Iterate()
	for it.Next(&k, &v) {
		fn(k.Addr, &v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading address counters: %w", err)
	}
	return nil
}

func addrOfKey(k [16]byte) netip.Addr {
	return netip.AddrFrom16(k).Unmap()
}

func (t *Tracer) wall(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return t.bootWall.Add(time.Duration(ns))
}
