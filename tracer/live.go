package tracer

import (
	"net/netip"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

// Live reads the counters for a view that redraws every second or so
// (acceptwatch -o top). Each Read visits every address once, with its counts
// and what they gained since the previous Read, so that a caller can keep only
// the rows it shows. The map is read in batches into buffers kept from one
// Read to the next, and per address only the counters a rate needs are
// remembered: once the set of addresses stops growing a Read allocates
// nothing per address, and memory is bounded by --max-addresses, not by time.
// A Live is not safe for concurrent use, nor with the Tracer's Total or Window.
type Live struct {
	t        *Tracer
	prev     map[[16]byte]liveCounts
	prevTime time.Time
	sample   AddrSample
}

// liveCounts are the counters of one address at the previous Read.
type liveCounts struct {
	accepted, handshakes, syns, synackRetrans, notAccepted uint64
}

// AddrSample is one address at a Read: its counters since the tracer started,
// and what they gained since the previous Read. The pointer passed to a
// visit function is valid only during that call.
type AddrSample struct {
	Key                                 [16]byte // IPv4 is v4-mapped
	Accepted, Handshakes, NotAccepted   uint64
	ClientGone, SynackRetrans, Syns     uint64
	NewAccepted, NewHandshakes, NewSyns uint64 // since the previous Read
	NewSynackRetrans, NewNotAccepted    uint64
	LastNs                              uint64 // CLOCK_MONOTONIC of the last event
	v                                   *acceptwatchAddrStats
	t                                   *Tracer
}

// Addr is the remote address (IPv4 unmapped).
func (s *AddrSample) Addr() netip.Addr { return addrOfKey(s.Key) }

// Wait is the address's queue waits since the start.
func (s *AddrSample) Wait() report.Wait { return waitStats(s.v.WaitHist, s.v.WaitMaxNs) }

// Last is when the address was last seen.
func (s *AddrSample) Last() time.Time { return s.t.wall(s.LastNs) }

// LiveTotals are the run's counters at a Read, since the tracer started: the
// totals are exact (the address map's overflow included); Addresses is left
// empty, the visit function sees each one.
type LiveTotals struct {
	Counts
	Interval     time.Duration // since the previous Read that advanced
	AddressCount int           // entries in the address map
}

// Live starts a live reader; the first Read's gains are everything counted
// since the tracer started.
func (t *Tracer) Live() *Live {
	return &Live{t: t, prev: map[[16]byte]liveCounts{}, prevTime: t.start}
}

// Read visits every address and returns the totals. With advance, the next
// Read's gains start from now; without (a redraw between two refreshes, e.g.
// for a new sort order) they keep counting from the previous advancing Read,
// and Interval says over how long.
func (l *Live) Read(advance bool, visit func(*AddrSample)) (LiveTotals, error) {
	t := l.t
	now := time.Now()
	tot := LiveTotals{Counts: Counts{Start: t.start, End: now, SynCounter: t.synCounter, DropCounters: t.DropCounters()}, Interval: now.Sub(l.prevTime)}
	stats, err := t.readStats()
	if err != nil {
		return tot, err
	}
	s := &l.sample
	err = t.eachAddr(func(k [16]byte, v *acceptwatchAddrStats) {
		p := l.prev[k]
		*s = AddrSample{
			Key: k, t: t, v: v,
			Accepted: v.Accepted, Handshakes: v.Handshakes, NotAccepted: v.NotAccepted,
			ClientGone: v.Gone, SynackRetrans: v.SynackRetrans, Syns: v.Syns,
			NewAccepted:      v.Accepted - p.accepted,
			NewHandshakes:    v.Handshakes - p.handshakes,
			NewSyns:          v.Syns - p.syns,
			NewSynackRetrans: v.SynackRetrans - p.synackRetrans,
			NewNotAccepted:   v.NotAccepted - p.notAccepted,
			LastNs:           v.LastNs,
		}
		if advance {
			l.prev[k] = liveCounts{v.Accepted, v.Handshakes, v.Syns, v.SynackRetrans, v.NotAccepted}
		}
		tot.AddressCount++
		tot.addAddr(v)
		visit(s)
	})
	*s = AddrSample{} // no pointer into the batch buffer outlives the Read
	if err != nil {
		return tot, err
	}
	if err := t.collectPorts(&tot.Counts, false); err != nil {
		return tot, err
	}
	tot.addStats(stats)
	ns, err := readNetstat()
	if err != nil {
		return tot, err
	}
	tot.KernelCounters = kernelCounters(ns, t.counters)
	if advance {
		l.prevTime = now
	}
	return tot, nil
}
