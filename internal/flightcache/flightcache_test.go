package flightcache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestTTL(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := New[string](10*time.Second, 10, clk.now)
	c.Set("a", "1")
	tests := []struct {
		advance time.Duration
		want    bool
	}{
		{0, true},
		{9*time.Second + 999*time.Millisecond, true},
		{time.Millisecond, false}, // exactly at expiry: gone
		{time.Hour, false},
	}
	for i, tt := range tests {
		clk.t = clk.t.Add(tt.advance)
		_, ok := c.Get("a")
		if ok != tt.want {
			t.Errorf("step %d (t=%v): Get ok = %v, want %v", i, clk.t, ok, tt.want)
		}
	}
	if c.Len() != 0 {
		t.Errorf("expired entry still held: Len = %d", c.Len())
	}
}

func TestSizeBound(t *testing.T) {
	c := New[int](time.Hour, 3, nil)
	for i := range 3 {
		c.Set(fmt.Sprint(i), i)
	}
	c.Get("0") // 0 is now the most recently used; 1 is the oldest
	c.Set("3", 3)
	var got []string
	for i := range 4 {
		if _, ok := c.Get(fmt.Sprint(i)); ok {
			got = append(got, fmt.Sprint(i))
		}
	}
	if diff := cmp.Diff([]string{"0", "2", "3"}, got); diff != "" {
		t.Errorf("kept keys (-want +got):\n%s", diff)
	}
	if c.Len() != 3 {
		t.Errorf("Len = %d, want 3", c.Len())
	}
}

// waitWaiters polls until n callers wait on the flight for key.
func waitWaiters[V any](t *testing.T, c *Cache[V], key string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		f := c.flights[key]
		w := 0
		if f != nil {
			w = f.wait
		}
		c.mu.Unlock()
		if w >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters after 10s, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSingleFlight(t *testing.T) {
	tests := []struct {
		name      string
		share     bool
		err       error
		wantCalls int32
		wantCache bool
	}{
		{"shared value", true, nil, 1, true},
		{"private value", false, nil, 10, false},
		{"error", true, errors.New("down"), 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New[int](time.Hour, 10, nil)
			var calls atomic.Int32
			release := make(chan struct{})
			load := func() (int, bool, error) {
				if calls.Add(1) == 1 {
					<-release
				}
				return 42, tt.share, tt.err
			}
			const n = 10
			var wg sync.WaitGroup
			errs := make(chan error, n)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Load(context.Background(), "k", load)
				errs <- err
			}()
			waitFlight(t, c, "k")
			for range n - 1 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := c.Load(context.Background(), "k", load)
					errs <- err
				}()
			}
			waitWaiters(t, c, "k", n-1)
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if !errors.Is(err, tt.err) {
					t.Errorf("Load error = %v, want %v", err, tt.err)
				}
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("load calls = %d, want %d", got, tt.wantCalls)
			}
			if _, ok := c.Get("k"); ok != tt.wantCache {
				t.Errorf("cached = %v, want %v", ok, tt.wantCache)
			}
		})
	}
}

func waitFlight[V any](t *testing.T, c *Cache[V], key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		_, ok := c.flights[key]
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no flight after 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWaiterContext(t *testing.T) {
	c := New[int](time.Hour, 10, nil)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Load(context.Background(), "k", func() (int, bool, error) { <-release; return 1, true, nil })
	}()
	waitFlight(t, c, "k")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Load(ctx, "k", func() (int, bool, error) { return 2, true, nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: err = %v, want context.Canceled", err)
	}
	close(release)
	<-done
	if v, _ := c.Get("k"); v != 1 {
		t.Errorf("cached %d, want 1", v)
	}
}
