package overload

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts durations in buckets 1/16 of a power of two wide (a
// value is known within 6.25 %), from 1 µs to hours; Record is safe for
// concurrent use and allocates nothing.
type Histogram struct {
	buckets [64 * 16]atomic.Int64
	n       atomic.Int64
	max     atomic.Int64
}

func bucketOf(us uint64) int {
	if us < 16 {
		return int(us)
	}
	e := bits.Len64(us) - 5 // us >> e is in [16, 32)
	return (e+1)*16 + int(us>>e) - 16
}

// lowerBound is the smallest value, in µs, of bucket i.
func lowerBound(i int) uint64 {
	if i < 16 {
		return uint64(i)
	}
	e := i/16 - 1
	return uint64(16+i%16) << e
}

// Record counts d.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(max(d.Microseconds(), 0))
	h.buckets[bucketOf(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if int64(us) <= m || h.max.CompareAndSwap(m, int64(us)) {
			break
		}
	}
}

// Count returns the number of values recorded.
func (h *Histogram) Count() int64 { return h.n.Load() }

// Quantile returns the value below which a fraction q of the values are
// (the upper bound of its bucket), 0 if there are none.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(q * float64(n))
	if rank >= n {
		rank = n - 1
	}
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen > rank {
			upper := lowerBound(i + 1)
			if m := uint64(h.max.Load()); upper > m {
				upper = m
			}
			return time.Duration(upper) * time.Microsecond
		}
	}
	return h.Max()
}

// Max returns the largest value recorded.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) * time.Microsecond }

// Clone returns a copy of h.
func (h *Histogram) Clone() *Histogram {
	c := new(Histogram)
	for i := range h.buckets {
		c.buckets[i].Store(h.buckets[i].Load())
	}
	c.n.Store(h.n.Load())
	c.max.Store(h.max.Load())
	return c
}
