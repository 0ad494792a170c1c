package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/acceptwatch/acceptwatch/report"
)

// Counts is what the kernel counted over a window; exact even when live
// events were lost.
type Counts struct {
	Start, End         time.Time
	Addresses          []report.AddrStats
	Listeners          []report.PortStats // sorted by port
	KernelCounters     []report.KernelCounter
	TotalAccepted      uint64 // including accepts the full address map could not attribute
	TotalHandshakes    uint64
	TotalNotAccepted   uint64
	TotalClientGone    uint64
	TotalSynackRetrans uint64
	TotalSyns          uint64
	TotalDrops         uint64
	SynCounter         string   // where SYNs are counted (SynCgroup, SynConnRequest), "" if not
	DropCounters       []string // which accept-queue drops are attributed (DropsSyn, DropsFinalAck)
	LostEvents         uint64
	AddressOverflow    uint64 // events not attributed to an address: map full
	WaitsUnknown       uint64 // handshakes whose queue wait could not be kept: table full
	PortsOverflow      uint64 // events not counted per port: port table full
	MissedRuns         uint64 // hook runs the kernel skipped: a BPF program was running on that CPU
}

// Total returns everything counted since the tracer started.
func (t *Tracer) Total() (Counts, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.collect(t.start, false)
}

// Window returns what was counted since the previous Window call (or the
// start) and begins a new window.
func (t *Tracer) Window() (Counts, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, err := t.collect(t.windowStart, true)
	if err != nil {
		return c, err
	}
	t.windowID++
	if t.window != nil {
		if err := t.window.Set(t.windowID); err != nil {
			return c, fmt.Errorf("starting a new window: %w", err)
		}
	}
	t.windowStart = c.End
	return c, nil
}

// collect reads every counter; for a window it subtracts what the previous
// window had seen and remembers the new values.
func (t *Tracer) collect(start time.Time, window bool) (Counts, error) {
	c := Counts{Start: start, End: time.Now(), SynCounter: t.synCounter, DropCounters: t.DropCounters()}
	stats, err := t.readStats()
	if err != nil {
		return c, err
	}
	err = t.eachAddr(func(k addrKey, v *acceptwatchAddrStats) {
		d := *v
		first := v.FirstNs
		if window {
			p := t.prev[k]
			d = subAddr(*v, p)
			if d.Accepted+d.Handshakes+d.NotAccepted+d.SynackRetrans+d.Syns+uint64(d.Drops) == 0 {
				return
			}
			t.prev[k] = *v
			first = 0
			if v.Window == t.windowID {
				first = v.WindowFirstNs
			}
		}
		a := report.AddrStats{
			Addr:          addrOfKey(k),
			NetNS:         k.Netns,
			Accepted:      d.Accepted,
			Handshakes:    d.Handshakes,
			First:         t.wall(first),
			Last:          t.wall(v.LastNs),
			NotAccepted:   d.NotAccepted,
			ClientGone:    d.Gone,
			SynackRetrans: d.SynackRetrans,
			Syns:          d.Syns,
			Drops:         uint64(d.Drops),
			Wait:          waitStats(d.WaitHist[:], addrBucket, v.WaitMinNs, v.WaitMaxNs, !window),
		}
		if window && (a.First.IsZero() || a.First.Before(start)) {
			// Touched only after the window closed below: its first time
			// in this window is known no closer than the window's start.
			a.First = start
		}
		c.Addresses = append(c.Addresses, a)
		c.addAddr(&d)
	})
	if err != nil {
		return c, err
	}
	if err := t.collectPorts(&c, window); err != nil {
		return c, err
	}

	ns, nsErr := t.readNetstat()
	base := t.counters
	if window {
		base = t.prevCounters
		t.prevCounters = ns
	}
	if nsErr == nil {
		c.KernelCounters = kernelCounters(ns, base)
	}

	if window {
		cur := stats
		for i := range stats {
			stats[i] -= t.prevStats[i]
		}
		t.prevStats = cur
	}
	missed := t.recursionMisses()
	if window {
		missed, t.prevMissed = missed-t.prevMissed, missed
	}
	c.MissedRuns = missed
	c.addStats(stats)
	return c, nsErr
}

// addAddr adds one address's counters to the totals.
func (c *Counts) addAddr(d *acceptwatchAddrStats) {
	c.TotalAccepted += d.Accepted
	c.TotalHandshakes += d.Handshakes
	c.TotalNotAccepted += d.NotAccepted
	c.TotalClientGone += d.Gone
	c.TotalSynackRetrans += d.SynackRetrans
	c.TotalSyns += d.Syns
	c.TotalDrops += uint64(d.Drops)
}

// addStats adds what the address map could not attribute to the totals and
// takes the drop counters.
func (c *Counts) addStats(stats [acceptwatchStatSTAT_MAX]uint64) {
	c.TotalAccepted += stats[acceptwatchStatSTAT_OVERFLOW_ACCEPTS]
	c.TotalHandshakes += stats[acceptwatchStatSTAT_OVERFLOW_HANDSHAKES]
	c.LostEvents = stats[acceptwatchStatSTAT_LOST_EVENTS]
	c.AddressOverflow = stats[acceptwatchStatSTAT_OVERFLOW_ACCEPTS] + stats[acceptwatchStatSTAT_OVERFLOW_HANDSHAKES] +
		stats[acceptwatchStatSTAT_OVERFLOW_OTHER]
	c.WaitsUnknown = stats[acceptwatchStatSTAT_PENDING_FULL]
	c.PortsOverflow = stats[acceptwatchStatSTAT_PORTS_FULL]
}

// kernelCounters are the TcpExt changes from base to ns.
func kernelCounters(ns, base netstat) []report.KernelCounter {
	out := make([]report.KernelCounter, 0, len(netstatNames))
	for i, name := range netstatNames {
		out = append(out, report.KernelCounter{Name: name, Delta: ns[i] - base[i]})
	}
	return out
}

func (t *Tracer) collectPorts(c *Counts, window bool) error {
	var port portKey
	var perCPU []acceptwatchPortStats
	it := t.lports.Iterate()
	for it.Next(&port, &perCPU) {
		v := mergePortStats(perCPU)
		d := v
		if window {
			d = subPort(v, t.prevPorts[port])
			t.prevPorts[port] = v
			if d.Accepted+d.NotAccepted+d.SynackRetrans+d.Syns+d.Drops == 0 {
				continue
			}
		}
		c.Listeners = append(c.Listeners, report.PortStats{
			Port:          port.Port,
			NetNS:         port.Netns,
			Accepted:      d.Accepted,
			NotAccepted:   d.NotAccepted,
			SynackRetrans: d.SynackRetrans,
			Syns:          d.Syns,
			Drops:         d.Drops,
			BacklogMax:    d.BacklogMax,
			BacklogLimit:  d.BacklogLimit,
			Wait:          waitStats(d.WaitHist[:], portBucket, d.WaitMinNs, d.WaitMaxNs, !window),
		})
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading port counters: %w", err)
	}
	slices.SortFunc(c.Listeners, func(a, b report.PortStats) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.NetNS, b.NetNS))
	})
	return nil
}

// mergePortStats adds up a port's per-CPU counters.
func mergePortStats(perCPU []acceptwatchPortStats) acceptwatchPortStats {
	var m acceptwatchPortStats
	for _, v := range perCPU {
		m.Accepted += v.Accepted
		m.Handshakes += v.Handshakes
		m.NotAccepted += v.NotAccepted
		m.Gone += v.Gone
		m.SynackRetrans += v.SynackRetrans
		m.Syns += v.Syns
		m.Drops += v.Drops
		m.WaitSumNs += v.WaitSumNs
		m.WaitMaxNs = max(m.WaitMaxNs, v.WaitMaxNs)
		if v.WaitMinNs != 0 && (m.WaitMinNs == 0 || v.WaitMinNs < m.WaitMinNs) {
			m.WaitMinNs = v.WaitMinNs // 0: this CPU saw no wait
		}
		m.BacklogMax = max(m.BacklogMax, v.BacklogMax)
		m.BacklogLimit = max(m.BacklogLimit, v.BacklogLimit)
		for i := range m.WaitHist {
			m.WaitHist[i] += v.WaitHist[i]
		}
	}
	return m
}

// subPort is subAddr for a port's counters (maxima and backlog stay as they are).
func subPort(v, p acceptwatchPortStats) acceptwatchPortStats {
	v.Accepted -= p.Accepted
	v.Handshakes -= p.Handshakes
	v.NotAccepted -= p.NotAccepted
	v.Gone -= p.Gone
	v.SynackRetrans -= p.SynackRetrans
	v.Syns -= p.Syns
	v.Drops -= p.Drops
	v.WaitSumNs -= p.WaitSumNs
	for i := range v.WaitHist {
		v.WaitHist[i] -= p.WaitHist[i]
	}
	return v
}

func subAddr(v, p acceptwatchAddrStats) acceptwatchAddrStats {
	v.Accepted -= p.Accepted
	v.Handshakes -= p.Handshakes
	v.NotAccepted -= p.NotAccepted
	v.Gone -= p.Gone
	v.SynackRetrans -= p.SynackRetrans
	v.Syns -= p.Syns
	v.Drops -= p.Drops // 32 bits: a window's difference is right across a wrap
	for i := range v.WaitHist {
		v.WaitHist[i] -= p.WaitHist[i]
	}
	return v
}

// bucketFunc gives the range [lo, hi) of histogram bucket i; the last
// bucket is open-ended (hi = MaxInt64).
type bucketFunc func(i int) (lo, hi time.Duration)

const forever = time.Duration(math.MaxInt64)

// addrBucket: log2 buckets of microseconds (bpf/acceptwatch.h,
// ADDR_WAIT_BUCKETS): 0 under 1 µs, i in [2^(i-1), 2^i) µs.
func addrBucket(i int) (time.Duration, time.Duration) {
	hi := time.Duration(1<<i) * time.Microsecond
	if i == len(acceptwatchAddrStats{}.WaitHist)-1 {
		hi = forever
	}
	if i == 0 {
		return 0, hi
	}
	return time.Duration(1<<(i-1)) * time.Microsecond, hi
}

// portBucket: log-linear buckets of nanoseconds (PORT_WAIT_BUCKETS): 16
// linear ones of 64 ns below 1024 ns, then 16 per power of two.
func portBucket(i int) (time.Duration, time.Duration) {
	const sub = 1 << portWaitSubBits
	var lo, width int64
	if i < sub {
		width = 1 << (portWaitMinShift - portWaitSubBits)
		lo = int64(i) * width
	} else {
		e := portWaitMinShift + (i-sub)/sub
		width = 1 << (e - portWaitSubBits)
		lo = 1<<e + int64((i-sub)%sub)*width
	}
	if i == len(acceptwatchPortStats{}.WaitHist)-1 {
		return time.Duration(lo), forever
	}
	return time.Duration(lo), time.Duration(lo + width)
}

// The log-linear layout of bpf/acceptwatch.h (checked against the generated
// histogram's length in tests).
const (
	portWaitSubBits  = 4
	portWaitMinShift = 10
)

// waitStats turns a histogram into count, min, max and the p50 and p99
// ranges: the bucket that holds the percentile's rank, narrowed by the
// smallest and largest wait (minNs 0 or ~0: none known). minNs and maxNs are
// over the whole run (exact: the histogram is the run's too); for a window
// they are bounds, narrowed to its own buckets.
func waitStats(hist []uint32, bucket bucketFunc, minNs, maxNs uint64, exact bool) report.Wait {
	var w report.Wait
	first, last := -1, 0
	for i, n := range hist {
		w.Count += uint64(n)
		if n > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if w.Count == 0 {
		return w
	}
	lo, _ := bucket(first)
	_, hi := bucket(last)
	w.Min, w.Max = lo, hi
	if minNs != 0 && minNs != math.MaxUint64 {
		w.Min = max(w.Min, time.Duration(minNs))
	}
	if maxNs != 0 {
		w.Max = min(w.Max, time.Duration(maxNs))
	}
	w.Max = max(w.Max, w.Min) // a window's buckets may lie past the run's max read earlier
	pct := func(q float64) report.Quantile {
		target := uint64(math.Ceil(q * float64(w.Count)))
		// The first and last rank are the smallest and largest wait.
		if exact && target == w.Count && maxNs != 0 {
			return report.Quantile{Lo: w.Max, Hi: w.Max}
		}
		if exact && target == 1 && minNs != 0 && minNs != math.MaxUint64 {
			return report.Quantile{Lo: w.Min, Hi: w.Min}
		}
		var cum uint64
		for i, n := range hist {
			cum += uint64(n)
			if cum >= target {
				lo, hi := bucket(i)
				return report.Quantile{Lo: min(max(lo, w.Min), w.Max), Hi: max(min(hi, w.Max), w.Min)}
			}
		}
		return report.Quantile{Lo: w.Max, Hi: w.Max}
	}
	w.P50, w.P99 = pct(0.50), pct(0.99)
	return w
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

// eachAddr visits every address with its counts since the start: the
// address map's, and what drained maps held (see retiredAddrs).
func (t *Tracer) eachAddr(fn func(addrKey, *acceptwatchAddrStats)) error {
	if t.retired != nil {
		return t.retired.each(t.eachActive, fn)
	}
	return t.eachActive(fn)
}

// eachActive visits every entry of the address map, in batches where the
// kernel supports it (1M entries one by one take seconds).
// The batch buffers are kept for the next call (a live view reads every second).
func (t *Tracer) eachActive(fn func(addrKey, *acceptwatchAddrStats)) error {
	const batch = 4096
	if t.batchKeys == nil {
		t.batchKeys = make([]acceptwatchAddrKey, batch)
		t.batchVals = make([]acceptwatchAddrStats, batch)
	}
	keys, vals := t.batchKeys, t.batchVals
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.addrs.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(keys[i], &vals[i])
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
		fn(k, &v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading address counters: %w", err)
	}
	return nil
}

// addrKey is an address map key: a remote address (IPv4 v4-mapped) in a
// network namespace (its inode; 0: a SYN counter could not tell).
type addrKey = acceptwatchAddrKey

// portKey is a port map key: a listening port in a network namespace.
type portKey = acceptwatchPortKey

func addrOfKey(k addrKey) netip.Addr {
	return netip.AddrFrom16(k.Addr).Unmap()
}

func (t *Tracer) wall(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return t.bootWall.Add(time.Duration(ns))
}

// recursionMisses sums what the kernel counts for each program when it
// skips a run because a BPF program is already running on that CPU (a
// softirq's handshake interrupting the same hook in process context): the
// counts are short by at most this much. 0 before Linux 5.12.
func (t *Tracer) recursionMisses() uint64 {
	var n uint64
	if t.coll == nil {
		return 0
	}
	for _, p := range t.coll.Programs {
		if st, err := p.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	return n
}
