package tracer

import (
	"math"
	"net/netip"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

// Live reads the counters for a view that redraws every second or so
// (acceptwatch -o top). Each Read visits every address once, with its counts
// and its accepts since the previous Read, so that a caller can keep only
// the rows it shows. The map is read in batches into buffers kept from one
// Read to the next, and per address only the count a rate needs is
// remembered: once the set of addresses stops growing a Read allocates
// nothing, and memory is bounded by --max-addresses, not by time.
// Where the address maps take turns (Config.AddressWindows), an address's
// counts are also what drained maps held (memory then grows with the
// distinct addresses of the run, as the final summary's does). A Read, Total,
// Window and RotateAddresses exclude each other: no swap falls inside a read.
// A Live is not safe for concurrent use.
type Live struct {
	t        *Tracer
	prevTime time.Time
	// The previous advancing Read's counters, in the order the map gave
	// them. The kernel's hash map never moves an entry and nothing deletes
	// from the map in use, so a Read meets the previous entries in the same order, with
	// new ones in between: matching them in step reads this memory
	// sequentially (a Go map of 100,000 addresses missed the cache on
	// every lookup and cost a third of a refresh).
	prevKeys [](addrKey)
	prevAcc  []uint64 // accepts
	prevMono uint64   // CLOCK_MONOTONIC when that Read began, less insertSlack
	curKeys  [](addrKey)
	curAcc   []uint64
	index    map[addrKey]int // prevKeys' positions, built only if the order ever differs
	// The map's order holds from one Read to the next: true until a drained
	// map's counts come in (retiredAddrs visits them in no set order, and
	// the map in use after a swap has an order of its own).
	ordered bool
	sample  AddrSample
}

// insertSlack: a program reads the clock a few microseconds before it
// inserts an address; an address first seen this little before a Read began
// may still be missing from it.
const insertSlack = uint64(time.Millisecond)

// before returns the address's accepts at the previous advancing Read; j is
// the position where the walk through prevKeys stands.
func (l *Live) before(k addrKey, v *acceptwatchAddrStats, j *int) uint64 {
	if *j < len(l.prevKeys) && l.prevKeys[*j] == k {
		*j++
		return l.prevAcc[*j-1]
	}
	if v.FirstNs > l.prevMono && l.ordered {
		// New since the previous Read began: the order puts the new ones
		// in between.
		return 0
	}
	// Older than the previous Read, so it saw this address, but not where
	// the order says, or the order changed (a swap of the address maps):
	// look it up (should the kernel ever order its entries otherwise, the
	// counts stay right, only slower).
	if l.index == nil {
		l.index = make(map[addrKey]int, len(l.prevKeys))
		for i, pk := range l.prevKeys {
			l.index[pk] = i
		}
	}
	if i, ok := l.index[k]; ok {
		return l.prevAcc[i]
	}
	return 0
}

// AddrSample is one address at a Read: its counters since the tracer started,
// and what they gained since the previous Read. The pointer passed to a
// visit function is valid only during that call.
type AddrSample struct {
	Key                               addrKey // IPv4 is v4-mapped
	Accepted, Handshakes, NotAccepted uint64
	ClientGone, SynackRetrans, Syns   uint64
	Drops                             uint64 // see Tracer.DropCounters
	NewAccepted                       uint64 // since the previous advancing Read
	LastNs                            uint64 // CLOCK_MONOTONIC of the last event
	v                                 *acceptwatchAddrStats
	t                                 *Tracer
}

// NetNS is the address's network namespace (inode; 0: unknown).
func (s *AddrSample) NetNS() uint32 { return s.Key.Netns }

// Addr is the remote address (IPv4 unmapped).
func (s *AddrSample) Addr() netip.Addr { return addrOfKey(s.Key) }

// Wait is the address's queue waits since the start: percentiles as the
// range they lie in, as in the summary.
func (s *AddrSample) Wait() report.Wait {
	return waitStats(s.v.WaitHist[:], addrBucket, s.v.WaitMinNs, s.v.WaitMaxNs, true)
}

// Last is when the address was last seen.
func (s *AddrSample) Last() time.Time { return s.t.wall(s.LastNs) }

// LiveTotals are the run's counters at a Read, since the tracer started: the
// totals are exact (the address map's overflow included); Addresses is left
// empty, the visit function sees each one.
type LiveTotals struct {
	Counts
	Interval     time.Duration // since the previous Read that advanced
	AddressCount int           // addresses counted (those only drained maps held included)
}

// Live starts a live reader; the first Read's gains are everything counted
// since the tracer started.
func (t *Tracer) Live() *Live {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.retired == nil {
		// Address maps drained from now on stay in the run's counts.
		t.retired = newRetiredAddrs()
	}
	return &Live{t: t, prevTime: t.start}
}

// Read visits every address and returns the totals. With advance, the next
// Read's gains start from now; without (a redraw between two refreshes, e.g.
// for a new sort order) they keep counting from the previous advancing Read,
// and Interval says over how long.
func (l *Live) Read(advance bool, visit func(*AddrSample)) (LiveTotals, error) {
	t := l.t
	// No swap of the address maps (RotateAddresses) in the middle of a read.
	t.mu.Lock()
	defer t.mu.Unlock()
	mono, now := monotonicNow()
	tot := LiveTotals{Counts: Counts{Start: t.start, End: now, SynCounter: t.synCounter, DropCounters: t.DropCounters()}, Interval: now.Sub(l.prevTime)}
	stats, err := t.readStats()
	if err != nil {
		return tot, err
	}
	s := &l.sample
	j := 0
	l.ordered = t.retired == nil || len(t.retired.m) == 0
	l.curKeys, l.curAcc = l.curKeys[:0], l.curAcc[:0]
	err = t.eachAddr(func(k addrKey, v *acceptwatchAddrStats) {
		*s = AddrSample{
			Key: k, t: t, v: v,
			Accepted: v.Accepted, Handshakes: v.Handshakes, NotAccepted: v.NotAccepted,
			ClientGone: v.Gone, SynackRetrans: v.SynackRetrans, Syns: v.Syns, Drops: uint64(v.Drops),
			NewAccepted: v.Accepted - l.before(k, v, &j),
			LastNs:      v.LastNs,
		}
		if advance {
			l.curKeys = append(l.curKeys, k)
			l.curAcc = append(l.curAcc, v.Accepted)
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
	tot.MissedRuns = t.recursionMisses()
	ns, err := t.readNetstat()
	if err != nil {
		return tot, err
	}
	tot.KernelCounters = kernelCounters(ns, t.counters)
	if advance {
		l.prevTime, l.prevMono = now, uint64(mono)-min(uint64(mono), insertSlack)
		l.prevKeys, l.curKeys = l.curKeys, l.prevKeys
		l.prevAcc, l.curAcc = l.curAcc, l.prevAcc
		l.index = nil
	}
	return tot, nil
}

// WaitSum adds up addresses' queue-wait histograms: the waits of a network.
// The buckets are the addresses' own, so the sum is exactly the network's
// histogram, and the smallest and largest wait of its addresses are the
// network's: its percentiles are ranges as true as an address's.
type WaitSum struct {
	hist         [len(acceptwatchAddrStats{}.WaitHist)]uint32
	minNs, maxNs uint64 // 0: none yet
}

// Add adds an address's waits.
func (w *WaitSum) Add(s *AddrSample) {
	v := s.v
	var n uint32
	for i, c := range v.WaitHist {
		w.hist[i] += c
		n |= c
	}
	if n == 0 {
		return
	}
	w.maxNs = max(w.maxNs, v.WaitMaxNs)
	if v.WaitMinNs != 0 && v.WaitMinNs != math.MaxUint64 && (w.minNs == 0 || v.WaitMinNs < w.minNs) {
		w.minNs = v.WaitMinNs
	}
}

// Wait is the sum's count, min, max and percentile ranges.
func (w *WaitSum) Wait() report.Wait {
	return waitStats(w.hist[:], addrBucket, w.minNs, w.maxNs, true)
}
