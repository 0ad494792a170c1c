package metrics

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/acceptwatch/acceptwatch/tracer"
)

// fakeSource stands in for the tracer: windows of address counts to drain,
// and a fixed snapshot.
type fakeSource struct {
	snap    tracer.Snapshot
	windows [][]tracer.AddressCounts
	syns    bool
}

func (f *fakeSource) Snapshot(drain func(tracer.AddressCounts)) (tracer.Snapshot, error) {
	if drain != nil {
		f.RotateAddresses(drain)
	}
	return f.snap, nil
}
func (f *fakeSource) Mode() string { return "tracepoint" }
func (f *fakeSource) SynCounter() string {
	if f.syns {
		return "cgroup_skb"
	}
	return ""
}
func (f *fakeSource) RotateAddresses(fn func(tracer.AddressCounts)) error {
	if len(f.windows) == 0 {
		return nil
	}
	for _, c := range f.windows[0] {
		fn(c)
	}
	f.windows = f.windows[1:]
	return nil
}

func port(p uint16, accepted uint64, waits map[int]uint64) tracer.PortCounters {
	pc := tracer.PortCounters{Port: p, Accepted: accepted, Handshakes: accepted, WaitBuckets: make([]uint64, len(tracer.WaitBuckets())), BacklogMaxEpoch: 3, BacklogLimit: 128}
	for i, n := range waits {
		pc.WaitBuckets[i] = n
		pc.WaitSum += time.Duration(n) * time.Duration(float64(time.Second)*tracer.WaitBuckets()[i].Lower)
	}
	return pc
}

// TestCollectorLint: every family passes client_golang's linter (the rules
// promtool check metrics applies), and the values are the snapshot's.
func TestCollectorLint(t *testing.T) {
	src := &fakeSource{snap: tracer.Snapshot{
		Ports:  []tracer.PortCounters{port(80, 7, map[int]uint64{0: 1, 5: 4, 31: 2}), port(443, 2, nil)},
		Stats:  tracer.Stats{LostEvents: 3, OverflowAccepts: 1},
		Kernel: []tracer.KernelCounter{{Name: "ListenOverflows", Value: 11}},
	}, syns: true}
	c := New(src, Options{TopAddresses: 2, MaxAddresses: 64, AddressMaps: 2})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP acceptwatch_accepts_total Connections taken from the port's accept queue by accept().
# TYPE acceptwatch_accepts_total counter
acceptwatch_accepts_total{netns="0",port="443"} 2
acceptwatch_accepts_total{netns="0",port="80"} 7
# HELP acceptwatch_lost_events_total Live events the ring buffer could not take (counters stay exact).
# TYPE acceptwatch_lost_events_total counter
acceptwatch_lost_events_total 3
# HELP acceptwatch_tcpext_listen_overflows_total TcpExt ListenOverflows: completed handshakes dropped because an accept queue was full (all ports, since boot).
# TYPE acceptwatch_tcpext_listen_overflows_total counter
acceptwatch_tcpext_listen_overflows_total 11
# HELP acceptwatch_accept_queue_length_max Most connections waiting in the port's accept queue, as accept() found it, since the previous scrape.
# TYPE acceptwatch_accept_queue_length_max gauge
acceptwatch_accept_queue_length_max{netns="0",port="443"} 3
acceptwatch_accept_queue_length_max{netns="0",port="80"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "acceptwatch_accepts_total", "acceptwatch_lost_events_total",
		"acceptwatch_tcpext_listen_overflows_total", "acceptwatch_accept_queue_length_max"); err != nil {
		t.Error(err)
	}
}

// portOfWaits is a port's counters after the given queue waits, each
// counted in the kernel bucket that holds it.
func portOfWaits(p uint16, waits []time.Duration) tracer.PortCounters {
	bounds := tracer.WaitBuckets()
	pc := tracer.PortCounters{Port: p, Accepted: uint64(len(waits)), Handshakes: uint64(len(waits)), WaitBuckets: make([]uint64, len(bounds))}
	for _, w := range waits {
		s := w.Seconds()
		i := 0
		for i < len(bounds)-1 && !(s >= bounds[i].Lower && s < bounds[i].Upper) {
			i++
		}
		pc.WaitBuckets[i]++
		pc.WaitSum += w
	}
	return pc
}

// collectWait returns the one queue-wait histogram c exports.
func collectWait(t *testing.T, c *Collector) *dto.Histogram {
	t.Helper()
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	var h *dto.Histogram
	for m := range ch {
		if m.Desc() != queueWait {
			continue
		}
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		h = d.Histogram
	}
	if h == nil {
		t.Fatal("no queue-wait histogram")
	}
	return h
}

// nativeBuckets decodes a native histogram's positive spans: index -> count.
func nativeBuckets(h *dto.Histogram) map[int32]int64 {
	got := map[int32]int64{}
	var idx int32
	var cnt int64
	di := 0
	for _, s := range h.PositiveSpan {
		idx += s.GetOffset()
		for range s.GetLength() {
			cnt += h.PositiveDelta[di]
			di++
			if cnt != 0 {
				got[idx] = cnt
			}
			idx++
		}
	}
	return got
}

// TestWaitHistogram: known waits through the kernel's log-linear buckets.
// The classic buckets are one per octave, at kernel bounds (powers of two
// of nanoseconds from 1.024 µs to 2^41 ns), so each cumulative count is
// exactly the number of waits under its le. The native histogram has the
// exact count and sum, the sub-1.024 µs waits exactly in its zero bucket,
// schema 3 (the kernel's widest bucket above 1 µs is 1/16 of an octave's
// start: 2^(1/8) is the finest native growth not finer than that), and
// every wait in its own native bucket or the next one (a wait past the
// kernel's last bound where that last, open bucket starts).
func TestWaitHistogram(t *testing.T) {
	waits := []time.Duration{
		0, 63, 500, 1023, // linear buckets: the zero bucket
		1024, 1100, 2047, 2048, 3 * time.Microsecond, 3 * time.Microsecond,
		777 * time.Microsecond, 1500 * time.Microsecond, 20 * time.Millisecond, 20 * time.Millisecond,
		time.Second, 90 * time.Second, 30 * time.Minute, 2 * time.Hour, // the last bucket: from 2^40 * 31/16 ns (35.5 min) on
	}
	bounds := tracer.WaitBuckets()
	open := bounds[len(bounds)-1].Lower
	c := New(&fakeSource{snap: tracer.Snapshot{Ports: []tracer.PortCounters{portOfWaits(80, waits)}}}, Options{})
	h := collectWait(t, c)
	var sum time.Duration
	for _, w := range waits {
		sum += w
	}
	if h.GetSampleCount() != uint64(len(waits)) || h.GetSampleSum() != sum.Seconds() {
		t.Errorf("count %d sum %g, want %d and %g", h.GetSampleCount(), h.GetSampleSum(), len(waits), sum.Seconds())
	}
	if len(h.Bucket) != 31 {
		t.Errorf("%d classic buckets, want 31 (2^10 to 2^40 ns)", len(h.Bucket))
	}
	for i, b := range h.Bucket {
		le := time.Duration(1) << (10 + i)
		var want uint64
		for _, w := range waits {
			if w < le {
				want++
			}
		}
		if b.GetUpperBound() != le.Seconds() || b.GetCumulativeCount() != want {
			t.Errorf("classic bucket %d: le=%g count %d, want le=%g count %d", i, b.GetUpperBound(), b.GetCumulativeCount(), le.Seconds(), want)
		}
	}
	if h.GetSchema() != 3 || h.GetZeroThreshold() != 1.024e-6 || h.GetZeroCount() != 4 {
		t.Errorf("native: schema %d zero threshold %g zero count %d, want 3, 1.024e-06, 4", h.GetSchema(), h.GetZeroThreshold(), h.GetZeroCount())
	}
	got := nativeBuckets(h)
	// Where each wait truly lies at schema 3: (2^((k-1)/8), 2^(k/8)].
	want := map[int32]int64{}
	var total int64
	for _, w := range waits {
		if w < 1024 {
			continue
		}
		// The open last bucket is counted where it starts.
		k := int32(math.Ceil(math.Log2(min(w.Seconds(), open*1.0001)) * 8))
		if got[k] == 0 && got[k+1] == 0 && got[k-1] == 0 {
			t.Errorf("wait %v (native bucket %d): no count in buckets %d..%d: %v", w, k, k-1, k+1, got)
		}
		want[k]++
	}
	for k, n := range got {
		total += n
		if want[k]+want[k-1]+want[k+1] == 0 {
			t.Errorf("native bucket %d has %d, but no wait lies in it or next to it", k, n)
		}
	}
	if total != int64(len(waits)-4) {
		t.Errorf("%d in native buckets, want %d", total, len(waits)-4)
	}
}

// TestNativeLayout: over every kernel bucket, the native bucket a kernel
// bucket goes to holds at least half of it (in log scale), so its waits are
// at most one native bucket off; the zero bucket ends at a kernel bound.
func TestNativeLayout(t *testing.T) {
	bounds := tracer.WaitBuckets()
	l := newNativeLayout(bounds, tracer.WaitLinearBelow.Seconds())
	if l.zero != 16 || l.zeroThreshold != bounds[15].Upper || bounds[16].Lower != l.zeroThreshold {
		t.Fatalf("zero bucket: %d kernel buckets up to %g, want the 16 linear ones up to %g", l.zero, l.zeroThreshold, bounds[16].Lower)
	}
	scale := math.Exp2(float64(l.schema))
	for i := l.zero; i < len(bounds)-1; i++ {
		b := bounds[i]
		k := float64(l.index[i])
		nlo, nhi := math.Exp2((k-1)/scale), math.Exp2(k/scale)
		in := math.Log2(min(nhi, b.Upper)/max(nlo, b.Lower)) / math.Log2(b.Upper/b.Lower)
		if in < 0.5 {
			t.Errorf("kernel bucket %d [%g, %g): %.0f%% in native bucket %v (%g, %g]", i, b.Lower, b.Upper, in*100, k, nlo, nhi)
		}
	}
}

// TestNativeSchema: finer kernel buckets get a finer native schema, never a
// finer one than the kernel measures.
func TestNativeSchema(t *testing.T) {
	for _, tc := range []struct {
		ratio  float64
		schema int32
	}{{2, 0}, {1.05, 3}, {17.0 / 16, 3}, {4, -1}, {1.0027, 8}} {
		var bounds []tracer.Bucket
		x := 1e-6
		bounds = append(bounds, tracer.Bucket{Lower: 0, Upper: x})
		for range 10 {
			bounds = append(bounds, tracer.Bucket{Lower: x, Upper: x * tc.ratio})
			x *= tc.ratio
		}
		if got := newNativeLayout(bounds, 1e-6).schema; got != tc.schema {
			t.Errorf("bucket ratio %g: schema %d, want %d", tc.ratio, got, tc.schema)
		}
	}
}

// TestTopTable: at most k addresses, the busiest kept, every eviction
// counted so that tracked + evicted accepts = all accepts.
func TestTopTable(t *testing.T) {
	const k = 8
	var windows [][]tracer.AddressCounts
	var all uint64
	// 50 windows of 200 distinct addresses each; address i gets i%37 accepts,
	// and 10.0.0.1 is busy in every window.
	for w := range 50 {
		var win []tracer.AddressCounts
		for i := range 200 {
			a := netip.AddrFrom4([4]byte{10, byte(w + 1), byte(i >> 8), byte(i)})
			n := uint64(i % 37)
			win = append(win, tracer.AddressCounts{Addr: a, Accepted: n, Handshakes: n})
			all += n
		}
		win = append(win, tracer.AddressCounts{Addr: netip.MustParseAddr("10.0.0.1"), Accepted: 100, Handshakes: 100})
		all += 100
		windows = append(windows, win)
	}
	src := &fakeSource{windows: windows}
	c := New(src, Options{TopAddresses: k})
	for range windows {
		if err := c.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.top.heap); n != k {
		t.Fatalf("%d addresses tracked, want %d", n, k)
	}
	var tracked uint64
	for _, e := range c.top.heap {
		tracked += e.Accepted
	}
	if tracked+c.top.evictedAccepts != all {
		t.Errorf("tracked %d + evicted %d accepts != %d", tracked, c.top.evictedAccepts, all)
	}
	busy := c.top.byAddr[addrNS{addr: netip.MustParseAddr("10.0.0.1")}]
	if busy == nil || busy.Accepted != 50*100 {
		t.Errorf("the busiest address: %+v, want 5000 accepts", busy)
	}
	if c.top.evictions != 50*200+1-k { // every distinct address but the k kept
		t.Errorf("%d evictions, want %d", c.top.evictions, 50*200+1-k)
	}
	out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "acceptwatch_address_accepts_total")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `acceptwatch_address_accepts_total{addr="10.0.0.1",netns="0"} 5000`) || strings.Count(string(out), "\nacceptwatch_address_accepts_total{") != k {
		t.Errorf("exported top addresses:\n%s", out)
	}
}
