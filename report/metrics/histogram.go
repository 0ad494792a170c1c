package metrics

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/acceptwatch/acceptwatch/tracer"
)

// waitHistogram is one port's queue waits as a Prometheus histogram with
// both forms: classic buckets (le = each kernel bucket's upper bound) and a
// native (sparse, exponential) histogram. Both come from the kernel's
// buckets; no observation is seen one by one.
type waitHistogram struct {
	native prometheus.Metric // count, sum, native buckets, labels
	bounds []tracer.Bucket
	counts []uint64
}

func (h *waitHistogram) Desc() *prometheus.Desc { return h.native.Desc() }

func (h *waitHistogram) Write(m *dto.Metric) error {
	if err := h.native.Write(m); err != nil {
		return err
	}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		if math.IsInf(b.Upper, 1) {
			break // +Inf is implied by the count
		}
		m.Histogram.Bucket = append(m.Histogram.Bucket, &dto.Bucket{
			CumulativeCount: new(cum),
			UpperBound:      new(b.Upper),
		})
	}
	return nil
}

// nativeLayout maps kernel buckets onto a native histogram: the zero bucket
// takes a first bucket that starts at 0, and each other kernel bucket goes
// whole into the native bucket holding its geometric middle, at the finest
// schema whose buckets are no narrower than the kernel's (so a native
// bucket is never more precise than the kernel's measurement).
type nativeLayout struct {
	schema        int32
	zeroThreshold float64
	index         []int // native bucket of each kernel bucket; unused for the zero bucket
	zero          int   // kernel buckets [0, zero) go to the zero bucket
}

func newNativeLayout(bounds []tracer.Bucket) nativeLayout {
	l := nativeLayout{index: make([]int, len(bounds))}
	if len(bounds) > 0 && bounds[0].Lower == 0 {
		l.zero, l.zeroThreshold = 1, bounds[0].Upper
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
