package hist

import (
	"testing"
	"time"
)

func TestQuantileWithinOnePercent(t *testing.T) {
	var h H
	for i := 1; i <= 100_000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.9, 90 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{1, 100 * time.Millisecond},
	} {
		got := h.Quantile(tc.q)
		if rel := float64(got-tc.want) / float64(tc.want); rel > 0.01 || rel < -0.01 {
			t.Errorf("Quantile(%v) = %v, want %v within 1%%", tc.q, got, tc.want)
		}
	}
	if h.Count() != 100_000 || h.Max() != 100*time.Millisecond {
		t.Errorf("Count %d, Max %v", h.Count(), h.Max())
	}
}

func TestSmallValuesExact(t *testing.T) {
	var h H
	for i := range 100 {
		h.Record(time.Duration(i))
	}
	if got := h.Quantile(0.5); got != 49 && got != 50 {
		t.Errorf("median of 0..99 ns = %v", got)
	}
	if h.Mean() != 49 {
		t.Errorf("mean %v, want 49ns", h.Mean())
	}
}

// Every value must fall in a bucket whose lower bound is at most the value
// and less than 1 % below it.
func TestBucketBounds(t *testing.T) {
	for v := uint64(0); v < 1<<24; v = v*9/8 + 1 {
		lo := lower(bucket(v))
		if lo > v || float64(v-lo) > 0.01*float64(v) {
			t.Fatalf("value %d: bucket %d starts at %d", v, bucket(v), lo)
		}
	}
	if b := bucket(^uint64(0)); b >= buckets {
		t.Fatalf("largest value maps to bucket %d of %d", b, buckets)
	}
}

func TestMerge(t *testing.T) {
	var a, b H
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	a.Merge(&b)
	if a.Count() != 2 || a.Max() != 3*time.Millisecond || a.Mean() != 2*time.Millisecond {
		t.Errorf("after Merge: count %d max %v mean %v", a.Count(), a.Max(), a.Mean())
	}
	var empty H
	if empty.Quantile(0.99) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram must report zeros")
	}
}
