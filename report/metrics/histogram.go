package metrics

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/acceptwatch/acceptwatch/tracer"
)

// waitHistogram is one port's queue waits as a Prometheus histogram with
// both forms: classic buckets and a native (sparse, exponential) histogram.
// Both come from the kernel's buckets; no observation is seen one by one.
type waitHistogram struct {
	native  prometheus.Metric // count, sum, native buckets, labels
	classic []classicBucket
	counts  []uint64 // per kernel bucket
}

// classicBucket is a classic bucket's upper bound (le) and the last kernel
// bucket it takes in: le is that kernel bucket's upper bound, so the
// cumulative count is exact (the kernel's buckets hold waits under their
// upper bound: le is exclusive by one nanosecond).
type classicBucket struct {
	le   float64
	last int
}

// classicLayout picks the classic buckets' bounds among the kernel's: each
// power of two of nanoseconds from tracer.WaitLinearBelow (1.024 µs) to
// 2^40 ns (18.3 min; the kernel's finite buckets end at 35.5 min), one per
// octave: 31 bounds. A
// finer classic layout would multiply the series per port; the native
// histogram carries the kernel's precision.
func classicLayout(bounds []tracer.Bucket) []classicBucket {
	var out []classicBucket
	for i, b := range bounds {
		if math.IsInf(b.Upper, 1) {
			break
		}
		ns := int64(math.Round(b.Upper * 1e9))
		if ns >= int64(tracer.WaitLinearBelow) && ns&(ns-1) == 0 {
			out = append(out, classicBucket{le: b.Upper, last: i})
		}
	}
	return out
}

func (h *waitHistogram) Desc() *prometheus.Desc { return h.native.Desc() }

func (h *waitHistogram) Write(m *dto.Metric) error {
	if err := h.native.Write(m); err != nil {
		return err
	}
	var cum uint64
	next := 0 // kernel buckets counted so far
	for _, b := range h.classic {
		for ; next <= b.last; next++ {
			cum += h.counts[next]
		}
		m.Histogram.Bucket = append(m.Histogram.Bucket, &dto.Bucket{
			CumulativeCount: new(cum),
			UpperBound:      new(b.le),
		})
	}
	return nil // +Inf is implied by the count
}

// nativeLayout maps kernel buckets onto a native histogram: the kernel's
// buckets below zeroBelow go to the zero bucket (exactly: its threshold is
// their upper bound), and each other kernel bucket goes whole into the
// native bucket holding its geometric middle, at the finest schema whose
// buckets are no narrower than the kernel's. A native bucket is then never
// more precise than the kernel's measurement, and a kernel bucket's waits
// lie in the native bucket they are counted in or the one next to it.
type nativeLayout struct {
	schema        int32
	zeroThreshold float64
	index         []int // native bucket of each kernel bucket; unused for the zero bucket
	zero          int   // kernel buckets [0, zero) go to the zero bucket
}

// newNativeLayout lays out bounds (seconds), with the buckets that end at
// or below zeroBelow (seconds) in the zero bucket.
func newNativeLayout(bounds []tracer.Bucket, zeroBelow float64) nativeLayout {
	l := nativeLayout{index: make([]int, len(bounds))}
	for l.zero < len(bounds) && bounds[l.zero].Upper <= zeroBelow*(1+1e-9) {
		l.zeroThreshold = bounds[l.zero].Upper
		l.zero++
	}
	// The widest finite kernel bucket, as a ratio upper/lower.
	ratio := 1.0
	for _, b := range bounds[l.zero:] {
		if b.Lower > 0 && !math.IsInf(b.Upper, 1) {
			ratio = max(ratio, b.Upper/b.Lower)
		}
	}
	// Native buckets at schema s grow by 2^(2^-s): take the largest s whose
	// growth is at least ratio (schemas run from -4 to 8).
	l.schema = 8
	for l.schema > -4 && math.Exp2(math.Exp2(-float64(l.schema))) < ratio*(1-1e-9) {
		l.schema--
	}
	scale := math.Exp2(float64(l.schema))
	for i := l.zero; i < len(bounds); i++ {
		b := bounds[i]
		// Native bucket k holds (2^((k-1)/scale), 2^(k/scale)].
		x := math.Sqrt(b.Lower * b.Upper)
		if math.IsInf(b.Upper, 1) {
			x = b.Lower * 1.0001 // the open last bucket: just above its start
		}
		l.index[i] = int(math.Ceil(math.Log2(x) * scale))
	}
	return l
}

func (l nativeLayout) metric(desc *prometheus.Desc, counts []uint64, sum time.Duration, created time.Time, labels ...string) (prometheus.Metric, error) {
	var total, zero uint64
	pos := map[int]int64{}
	for i, n := range counts {
		total += n
		if i < l.zero {
			zero += n
			continue
		}
		if n > 0 {
			pos[l.index[i]] += int64(n)
		}
	}
	return prometheus.NewConstNativeHistogram(desc, total, sum.Seconds(), pos, nil, zero, l.schema, l.zeroThreshold, created, labels...)
}
