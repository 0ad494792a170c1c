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
acceptwatch_accepts_total{port="443"} 2
acceptwatch_accepts_total{port="80"} 7
# HELP acceptwatch_lost_events_total Live events the ring buffer could not take (counters stay exact).
# TYPE acceptwatch_lost_events_total counter
acceptwatch_lost_events_total 3
# HELP acceptwatch_tcpext_listen_overflows_total TcpExt ListenOverflows: completed handshakes dropped because an accept queue was full (all ports, since boot).
# TYPE acceptwatch_tcpext_listen_overflows_total counter
acceptwatch_tcpext_listen_overflows_total 11
# HELP acceptwatch_accept_queue_length_max Most connections waiting in the port's accept queue, as accept() found it, since the previous scrape.
# TYPE acceptwatch_accept_queue_length_max gauge
acceptwatch_accept_queue_length_max{port="443"} 3
acceptwatch_accept_queue_length_max{port="80"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "acceptwatch_accepts_total", "acceptwatch_lost_events_total",
		"acceptwatch_tcpext_listen_overflows_total", "acceptwatch_accept_queue_length_max"); err != nil {
		t.Error(err)
	}
}

// TestWaitHistogram: classic buckets are cumulative with the kernel's upper
// bounds; the native histogram has the same count and sum, the sub-µs bucket
// in its zero bucket, and every kernel bucket inside the native bucket that
// holds most of it.
func TestWaitHistogram(t *testing.T) {
	src := &fakeSource{snap: tracer.Snapshot{Ports: []tracer.PortCounters{port(80, 7, map[int]uint64{0: 1, 5: 4, 31: 2})}}}
	c := New(src, Options{})
	var h *dto.Histogram
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
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
	if h.GetSampleCount() != 7 {
		t.Errorf("count %d, want 7", h.GetSampleCount())
	}
	bounds := tracer.WaitBuckets()
	if len(h.Bucket) != len(bounds)-1 {
		t.Fatalf("%d classic buckets, want %d (the last is +Inf)", len(h.Bucket), len(bounds)-1)
	}
	for i, b := range h.Bucket {
		want := uint64(1)
		if i >= 5 {
			want = 5
		}
		if b.GetCumulativeCount() != want || b.GetUpperBound() != bounds[i].Upper {
			t.Errorf("bucket %d: le=%g count %d, want le=%g count %d", i, b.GetUpperBound(), b.GetCumulativeCount(), bounds[i].Upper, want)
		}
	}
	if h.GetSchema() != 0 || h.GetZeroThreshold() != 1e-6 || h.GetZeroCount() != 1 {
		t.Errorf("native: schema %d zero threshold %g zero count %d, want 0, 1e-06, 1", h.GetSchema(), h.GetZeroThreshold(), h.GetZeroCount())
	}
	// Decode the spans: index -> count.
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
	// Kernel bucket 5 is [16, 32) µs: native schema 0 bucket k holds
	// (2^(k-1), 2^k] s; the middle 22.6 µs = 2^-15.43 lies in k = -15.
	if got[-15] != 4 || len(got) != 2 {
		t.Errorf("native buckets %v, want 4 in bucket -15 and the open last bucket's 2", got)
	}
	lo, hi := math.Exp2(-16), math.Exp2(-15)
	if overlap := (min(hi, 32e-6) - max(lo, 16e-6)) / 16e-6; overlap < 0.9 {
		t.Errorf("native bucket -15 covers %.0f%% of kernel bucket 5, want ≥ 90%%", overlap*100)
	}
}

// TestNativeSchema: finer kernel buckets get a finer native schema, never a
// finer one than the kernel measures.
func TestNativeSchema(t *testing.T) {
	for _, tc := range []struct {
		ratio  float64
		schema int32
	}{{2, 0}, {1.05, 3}, {4, -1}, {1.0027, 8}} {
		var bounds []tracer.Bucket
		x := 1e-6
		bounds = append(bounds, tracer.Bucket{Lower: 0, Upper: x})
		for range 10 {
			bounds = append(bounds, tracer.Bucket{Lower: x, Upper: x * tc.ratio})
			x *= tc.ratio
		}
		if got := newNativeLayout(bounds).schema; got != tc.schema {
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
	busy := c.top.byAddr[netip.MustParseAddr("10.0.0.1")]
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
	if !strings.Contains(string(out), `acceptwatch_address_accepts_total{addr="10.0.0.1"} 5000`) || strings.Count(string(out), "\nacceptwatch_address_accepts_total{") != k {
		t.Errorf("exported top addresses:\n%s", out)
	}
}
