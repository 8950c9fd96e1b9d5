// Package hist is a latency histogram of fixed size with a relative error
// under 1 %: enough for percentiles over millions of samples without
// keeping them.
package hist

import (
	"math/bits"
	"time"
)

// A value v >= 2^precision lands in one of 2^precision linear buckets
// between the powers of two around it; smaller values are exact.
const (
	precision = 7
	perOctave = 1 << precision
	buckets   = (64 - precision + 1) * perOctave
)

// H counts durations (nanoseconds). The zero value is empty and ready.
type H struct {
	n, sum, max uint64
	counts      [buckets]uint64
}

func bucket(v uint64) int {
	if v < perOctave {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - precision
	return (shift+1)*perOctave + int(v>>shift) - perOctave
}

// lower returns the smallest value that falls in bucket i.
func lower(i int) uint64 {
	if i < perOctave {
		return uint64(i)
	}
	shift := i/perOctave - 1
	return uint64(i%perOctave+perOctave) << shift
}

// Record adds one sample; negative durations count as zero.
func (h *H) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucket(v)]++
	h.n++
	h.sum += v
	h.max = max(h.max, v)
}

// Merge adds every sample of o to h.
func (h *H) Merge(o *H) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count returns the number of samples.
func (h *H) Count() uint64 { return h.n }

// Max returns the largest sample.
func (h *H) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the mean of the samples, 0 when there are none.
func (h *H) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the q-quantile for 0 < q <= 1 (0.99 is the 99th
// percentile): the lower bound of the bucket holding that rank, so at most
// 1 % below the true value. It returns 0 when there are no samples.
func (h *H) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(uint64(q*float64(h.n)+0.5), 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return time.Duration(min(lower(i), h.max))
		}
	}
	return time.Duration(h.max)
}
