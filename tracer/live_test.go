package tracer

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/acceptwatch/acceptwatch/report"
)

func key(b byte) addrKey { return addrKey{Addr: [16]byte{15: b}} }

// before finds each address's previous counters whether the map gives the
// old entries in the same order with new ones in between (the fast path) or,
// should a kernel ever do so, in another order.
func TestLiveBefore(t *testing.T) {
	l := &Live{
		prevKeys: []addrKey{key(1), key(2), key(3)},
		prevAcc:  []uint64{10, 20, 30},
		prevMono: 1000,
		ordered:  true,
	}
	old := &acceptwatchAddrStats{FirstNs: 500}
	young := &acceptwatchAddrStats{FirstNs: 1500}
	type visit struct {
		k    byte
		v    *acceptwatchAddrStats
		want uint64
	}
	for _, tc := range []struct {
		name      string
		visits    []visit
		wantIndex bool
	}{
		{"same order", []visit{{1, old, 10}, {2, old, 20}, {3, old, 30}}, false},
		{"new ones in between", []visit{{9, young, 0}, {1, old, 10}, {2, old, 20}, {8, young, 0}, {3, old, 30}, {7, young, 0}}, false},
		{"another order", []visit{{3, old, 30}, {1, old, 10}, {2, old, 20}}, true},
		{"missed by the previous read", []visit{{1, old, 10}, {6, old, 0}, {2, old, 20}, {3, old, 30}}, true},
	} {
		l.index = nil
		j := 0
		for _, v := range tc.visits {
			if got := l.before(key(v.k), v.v, &j); got != v.want {
				t.Errorf("%s: address %d: before %d, want %d", tc.name, v.k, got, v.want)
			}
		}
		if (l.index != nil) != tc.wantIndex {
			t.Errorf("%s: index built %v, want %v", tc.name, l.index != nil, tc.wantIndex)
		}
	}
	// After a swap of the address maps the order says nothing: an address
	// first seen just before the previous read (within insertSlack), which
	// that read did see, is found by its key, not taken for a new one.
	l.ordered, l.index = false, nil
	l.prevKeys[2], l.prevAcc[2] = key(4), 40
	j := 0
	for _, v := range []struct {
		k    byte
		want uint64
	}{{4, 40}, {9, 0}, {1, 10}} {
		if got := l.before(key(v.k), young, &j); got != v.want {
			t.Errorf("order changed: address %d: before %d, want %d", v.k, got, v.want)
		}
	}
}

// A network's waits are its addresses' summed: count, smallest and largest
// exact, and each percentile's range holds the true one of all their waits
// together, as an address's does (addresses without waits change nothing).
func TestWaitSum(t *testing.T) {
	us, ms := time.Microsecond, time.Millisecond
	perAddr := [][]time.Duration{
		{8 * us, 9 * us, 300 * us},
		{},
		{290 * ms, 295 * ms, 303 * ms},
		{3 * us},
	}
	var random []time.Duration
	for range 500 {
		random = append(random, time.Duration(math.Exp(rand.Float64()*20)))
	}
	perAddr = append(perAddr, random)
	var sum WaitSum
	var all []time.Duration
	for _, waits := range perAddr {
		v := acceptwatchAddrStats{WaitMinNs: math.MaxUint64} // as addr_entry makes it
		if len(waits) > 0 {
			hist, minNs, maxNs := histOf(waits, len(v.WaitHist), addrBucketOf)
			copy(v.WaitHist[:], hist)
			v.WaitMinNs, v.WaitMaxNs = minNs, maxNs
		}
		sum.Add(&AddrSample{v: &v})
		all = append(all, waits...)
	}
	w := sum.Wait()
	if w.Count != uint64(len(all)) || w.Min != slices.Min(all) || w.Max != slices.Max(all) {
		t.Errorf("count %d min %v max %v, want %d %v %v", w.Count, w.Min, w.Max, len(all), slices.Min(all), slices.Max(all))
	}
	for _, c := range []struct {
		q float64
		p report.Quantile
	}{{0.5, w.P50}, {0.99, w.P99}} {
		want := trueQuantile(all, c.q)
		if want < c.p.Lo || want > c.p.Hi {
			t.Errorf("p%.0f: %v not in [%v, %v]", c.q*100, want, c.p.Lo, c.p.Hi)
		}
	}
	var none WaitSum
	none.Add(&AddrSample{v: &acceptwatchAddrStats{WaitMinNs: math.MaxUint64}})
	if w := none.Wait(); w.Count != 0 || w.Min != 0 || w.Max != 0 {
		t.Errorf("no waits: %+v", w)
	}
}
