package tracer

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// PortCounters is one listening port's counters since the tracer started.
type PortCounters struct {
	Port          uint16
	NetNS         uint32 // network namespace inode
	Accepted      uint64
	Handshakes    uint64
	NotAccepted   uint64
	ClientGone    uint64
	SynackRetrans uint64
	Syns          uint64
	Drops         uint64 // final ACKs dropped: accept queue full
	// Queue waits: a count per kernel bucket (bounds: WaitBuckets), their
	// sum and the largest.
	WaitBuckets []uint64
	WaitSum     time.Duration
	WaitMax     time.Duration
	// The accept queue as accept() found it: the most connections queued
	// since start and since the previous Snapshot, and the queue's limit.
	BacklogMax      uint32
	BacklogMaxEpoch uint32
	BacklogLimit    uint32
}

// WaitCount is the number of queue waits observed.
func (p *PortCounters) WaitCount() uint64 {
	var n uint64
	for _, c := range p.WaitBuckets {
		n += c
	}
	return n
}

// Bucket is one queue-wait bucket of the kernel's histograms: waits w with
// Lower <= w < Upper (Upper is +Inf for the last).
type Bucket struct{ Lower, Upper float64 } // seconds

// WaitBuckets are the bounds of the kernel's per-port queue-wait buckets
// (PortCounters.WaitBuckets): log-linear, within 3.2 % of every wait they
// hold; 16 linear buckets of 64 ns below WaitLinearBelow, then 16 per power
// of two of nanoseconds; the last one holds the rest.
func WaitBuckets() []Bucket {
	n := len(acceptwatchPortStats{}.WaitHist)
	out := make([]Bucket, n)
	for i := range out {
		lo, hi := portBucket(i)
		out[i] = Bucket{Lower: lo.Seconds(), Upper: hi.Seconds()}
		if hi == forever {
			out[i].Upper = math.Inf(1)
		}
	}
	return out
}

// WaitLinearBelow is where the per-port buckets turn from linear (64 ns
// wide) to log-linear: every bucket from here on is at most 1/16 of its
// lower bound wide, and its bounds are whole nanoseconds.
const WaitLinearBelow = time.Duration(1) << portWaitMinShift

// Stats are the counts of what the kernel could not record, since start.
type Stats struct {
	LostEvents         uint64 // live events the ring buffer could not take
	OverflowAccepts    uint64 // accepts not attributed to an address: map full
	OverflowHandshakes uint64
	OverflowOther      uint64 // other per-address events not attributed
	WaitsUnknown       uint64 // handshakes whose queue wait could not be kept
	PortsOverflow      uint64 // events not counted per port: port table full
	MissedRuns         uint64 // program runs the kernel skipped: a BPF program was running on that CPU
}

// KernelCounter is a TcpExt counter's value (since boot, network namespace wide).
type KernelCounter struct {
	Name  string
	Value uint64
}

// Snapshot is every exact counter of the run, cumulative, for a metrics
// scrape.
type Snapshot struct {
	Ports  []PortCounters // sorted by port
	Stats  Stats
	Kernel []KernelCounter // nil when /proc/net/netstat cannot be read
}

// Snapshot reads the counters. It also ends a backlog epoch: each port's
// BacklogMaxEpoch covers the time since the previous Snapshot. (The epoch
// is switched, then the kernel is made to wait until no program can still
// write the closed one, so its maxima are final when read.) With drain (and
// Config.AddressWindows) it also rotates the address maps as
// RotateAddresses does, in the same wait.
func (t *Tracer) Snapshot(drain func(AddressCounts)) (Snapshot, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var s Snapshot
	closed := t.epoch
	t.epoch++
	if err := t.blEpoch.Set(t.epoch); err != nil {
		return s, fmt.Errorf("starting a backlog epoch: %w", err)
	}
	if drain != nil {
		if err := t.rotate(drain); err != nil {
			return s, err
		}
	} else if err := t.addrWin.slot.Put(uint32(0), t.addrWin.active()); err != nil {
		return s, fmt.Errorf("waiting for running programs: %w", err)
	}
	var port portKey
	var perCPU []acceptwatchPortStats
	it := t.lports.Iterate()
	for it.Next(&port, &perCPU) {
		v := mergePortStats(perCPU)
		p := PortCounters{
			Port:          port.Port,
			NetNS:         port.Netns,
			Accepted:      v.Accepted,
			Handshakes:    v.Handshakes,
			NotAccepted:   v.NotAccepted,
			ClientGone:    v.Gone,
			SynackRetrans: v.SynackRetrans,
			Syns:          v.Syns,
			Drops:         v.Drops,
			WaitBuckets:   make([]uint64, len(v.WaitHist)),
			WaitSum:       time.Duration(v.WaitSumNs),
			WaitMax:       time.Duration(v.WaitMaxNs),
			BacklogMax:    v.BacklogMax,
			BacklogLimit:  v.BacklogLimit,
		}
		for i, n := range v.WaitHist {
			p.WaitBuckets[i] = uint64(n)
		}
		slot := closed & 1
		for _, c := range perCPU {
			if c.BlEpoch[slot] == closed {
				p.BacklogMaxEpoch = max(p.BacklogMaxEpoch, c.BlMax[slot])
			}
		}
		s.Ports = append(s.Ports, p)
	}
	if err := it.Err(); err != nil {
		return s, fmt.Errorf("reading port counters: %w", err)
	}
	slices.SortFunc(s.Ports, func(a, b PortCounters) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.NetNS, b.NetNS))
	})

	stats, err := t.readStats()
	if err != nil {
		return s, err
	}
	s.Stats = Stats{
		LostEvents:         stats[acceptwatchStatSTAT_LOST_EVENTS],
		OverflowAccepts:    stats[acceptwatchStatSTAT_OVERFLOW_ACCEPTS],
		OverflowHandshakes: stats[acceptwatchStatSTAT_OVERFLOW_HANDSHAKES],
		OverflowOther:      stats[acceptwatchStatSTAT_OVERFLOW_OTHER],
		WaitsUnknown:       stats[acceptwatchStatSTAT_PENDING_FULL],
		PortsOverflow:      stats[acceptwatchStatSTAT_PORTS_FULL],
		MissedRuns:         t.recursionMisses(),
	}
	if ns, err := t.readNetstat(); err == nil {
		for i, name := range netstatNames {
			s.Kernel = append(s.Kernel, KernelCounter{Name: name, Value: ns[i]})
		}
	}
	return s, nil
}
