// Package park lets an idle connection wait for its next bytes without a
// goroutine of its own.
//
// A goroutine blocked reading a socket costs its stack (2 KiB at least)
// for as long as the client keeps the connection open and silent, which
// for keep-alive clients is most of the connection's life. Parked
// instead, the connection costs an entry in a map and a timer: one
// goroutine waits on an epoll instance of its own for every parked
// descriptor (Linux), and starts a goroutine for a connection only when
// its client sends something, hangs up, or its idle time runs out.
//
// Waking through it costs a thread wake-up more than the runtime's own
// poller, so a connection is parked only once it has been idle for a
// while (see h1server), not between the requests of a busy client.
package park

import (
	"sync"
	"sync/atomic"
	"time"
)

// A Watch is one parked wait: fn runs once, on a goroutine of its own,
// when the descriptor becomes readable (ready true) or the timeout passes
// first (ready false), unless Stop stops it before.
type Watch struct {
	id    uint64
	state atomic.Int32 // watchPending, then watchDone
	fn    func(ready bool)
	timer *time.Timer
}

const (
	watchPending int32 = iota
	watchDone
)

// Stop stops w: fn will not run if it has not started. It reports whether
// it stopped w (false: fn ran or is starting).
func (w *Watch) Stop() bool {
	if !w.state.CompareAndSwap(watchPending, watchDone) {
		return false
	}
	w.timer.Stop()
	watches.remove(w.id)
	return true
}

// fire runs fn if nothing else did; ready tells which event won.
func (w *Watch) fire(ready bool) {
	if !w.state.CompareAndSwap(watchPending, watchDone) {
		return
	}
	watches.remove(w.id)
	if ready {
		w.timer.Stop()
		go w.fn(true)
		return
	}
	w.fn(false) // already on the timer's goroutine
}

// table maps the ids the poller reports to their watches. An id is never
// reused, so an event that comes late (its watch stopped, the descriptor
// parked again under a new id) finds nothing.
type table struct {
	mu   sync.Mutex
	m    map[uint64]*Watch
	next uint64
}

var watches table

// add gives w its id and enters it, arming its timer under the lock: an
// event found by get sees the timer set.
func (t *table) add(w *Watch, timeout time.Duration) {
	t.mu.Lock()
	t.next++
	w.id = t.next
	w.timer = time.AfterFunc(timeout, func() { w.fire(false) })
	if t.m == nil {
		t.m = make(map[uint64]*Watch)
	}
	t.m[w.id] = w
	t.mu.Unlock()
}

func (t *table) remove(id uint64) {
	t.mu.Lock()
	delete(t.m, id)
	t.mu.Unlock()
}

func (t *table) get(id uint64) *Watch {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

// Len reports how many watches are parked.
func Len() int {
	watches.mu.Lock()
	defer watches.mu.Unlock()
	return len(watches.m)
}
