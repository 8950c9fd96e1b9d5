// Package flightcache is a bounded cache of values that expire, with
// single-flight loading: concurrent misses for one key make one call.
// It is what golang.org/x/sync/singleflight plus an LRU would give, which
// sluice cannot depend on.
package flightcache

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Cache maps string keys to values of type V for a fixed time to live,
// holding at most a fixed number of entries (the least recently used one
// is evicted first). The zero value is not usable; call New.
type Cache[V any] struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element
	lru     list.List // of *entry[V], most recent first
	flights map[string]*flight[V]
}

type entry[V any] struct {
	key     string
	val     V
	expires time.Time
}

type flight[V any] struct {
	done chan struct{}
	val  V
	ok   bool // val may be shared with waiters
	err  error
	wait int // callers waiting, for tests
}

// New returns a cache whose entries live ttl and of which at most max are
// kept. now is the clock (time.Now if nil); tests pass their own.
func New[V any](ttl time.Duration, max int, now func() time.Time) *Cache[V] {
	if now == nil {
		now = time.Now
	}
	if max <= 0 {
		max = 1
	}
	return &Cache[V]{ttl: ttl, max: max, now: now,
		entries: make(map[string]*list.Element), flights: make(map[string]*flight[V])}
}

// Get returns the value stored for key if it has not expired. An entry is
// never returned at or after its expiry time.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getLocked(key)
}

func (c *Cache[V]) getLocked(key string) (V, bool) {
	var zero V
	el, ok := c.entries[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*entry[V])
	if !c.now().Before(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, key)
		return zero, false
	}
	c.lru.MoveToFront(el)
	return e.val, true
}

// Set stores val for key for the cache's time to live, evicting the least
// recently used entries beyond the size bound.
func (c *Cache[V]) Set(key string, val V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(key, val)
}

func (c *Cache[V]) setLocked(key string, val V) {
	exp := c.now().Add(c.ttl)
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*entry[V])
		e.val, e.expires = val, exp
		c.lru.MoveToFront(el)
		return
	}
	c.entries[key] = c.lru.PushFront(&entry[V]{key: key, val: val, expires: exp})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*entry[V]).key)
	}
}

// Delete removes key from the cache.
func (c *Cache[V]) Delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.lru.Remove(el)
		delete(c.entries, key)
	}
}

// Len returns the number of entries, expired ones included until they are
// looked up or evicted.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Load returns the cached value for key or calls load to get it. While a
// load for key is running, other callers wait for it instead of making
// their own call (single flight). load reports with share whether its
// value may be given to the waiters and cached; when it may not (a value
// that depends on the caller), each waiter calls load itself. An error is
// shared with the waiters and never cached.
//
// A waiter stops waiting when ctx is done. load runs in the goroutine of
// the first caller, so it should bound its own duration.
func (c *Cache[V]) Load(ctx context.Context, key string, load func() (val V, share bool, err error)) (V, error) {
	c.mu.Lock()
	if v, ok := c.getLocked(key); ok {
		c.mu.Unlock()
		return v, nil
	}
	if f, ok := c.flights[key]; ok {
		f.wait++
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
		if f.err != nil || f.ok {
			return f.val, f.err
		}
		v, _, err := load()
		return v, err
	}
	f := &flight[V]{done: make(chan struct{})}
	c.flights[key] = f
	c.mu.Unlock()

	completed := false
	defer func() {
		c.mu.Lock()
		delete(c.flights, key)
		if completed && f.err == nil && f.ok {
			c.setLocked(key, f.val)
		}
		if !completed { // load panicked: let the waiters load themselves
			f.ok, f.err = false, nil
		}
		c.mu.Unlock()
		close(f.done)
	}()
	f.val, f.ok, f.err = load()
	completed = true
	return f.val, f.err
}

// Waiting returns the number of callers waiting for the load of key in
// flight, for tests that must know a burst has gathered.
func (c *Cache[V]) Waiting(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[key]; ok {
		return f.wait
	}
	return 0
}
