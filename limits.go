package sluice

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The Proxy's bounds on requests in flight (Proxy.MaxInFlight and
// Proxy.MaxPerClient): see docs/limits.md.

// defaultMaxInFlight is Proxy.MaxInFlight when it is zero.
const defaultMaxInFlight = 16384

// errOverload marks the refusals of MaxInFlight and MaxPerClient
// (ErrorClass "overload").
var errOverload = errors.New("sluice: overloaded")

var (
	errProxyBusy = &Error{Status: http.StatusServiceUnavailable,
		Err: fmt.Errorf("%w: too many requests in flight (Proxy.MaxInFlight)", errOverload)}
	errClientBusy = &Error{Status: http.StatusTooManyRequests,
		Err: fmt.Errorf("%w: too many requests in flight from this client (Proxy.MaxPerClient)", errOverload)}
)

// retryAfter is the Retry-After of a refusal, in seconds (RFC 9110
// §10.2.3): a request in flight usually ends within it.
const retryAfter = "1"

// enter takes a slot of MaxInFlight, and reports false when none is
// free. It is an atomic add (and a second one to undo it when refused):
// no lock, no allocation.
func (p *Proxy) enter() bool {
	if p.inFlight.Add(1) > p.maxInFlight {
		p.inFlight.Add(-1)
		return false
	}
	return true
}

// clientKey names a client for MaxPerClient: its address, or the name
// ClientKey gave.
type clientKey struct {
	addr netip.Addr
	name string
}

// clientKeyOf returns the key pr counts under for MaxPerClient, and false
// when pr is exempt (ClientKey returned "").
func (p *Proxy) clientKeyOf(pr *ProxyRequest) (clientKey, bool) {
	if p.ClientKey != nil {
		name := p.ClientKey(pr)
		return clientKey{name: name}, name != ""
	}
	a := pr.client.Unmap()
	if a.Is6() {
		// One subscriber usually gets a /64 (RFC 6177): counting its
		// addresses apart would give it 2^64 times the bound.
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return clientKey{addr: a}, true
}

// enterClient takes one of pr's client's MaxPerClient slots, and reports
// false when it has none free.
func (p *Proxy) enterClient(pr *ProxyRequest) bool {
	k, ok := p.clientKeyOf(pr)
	if !ok {
		return true
	}
	if !p.clients.enter(k, p.MaxPerClient) {
		return false
	}
	pr.clientKey, pr.clientHeld = k, true
	return true
}

// leaveLimits gives back the slots pr holds. It runs when ServeHTTP
// returns, or earlier for an exchange that outlives it as a session
// (ProxyRequest.Upgrade): an open WebSocket is not a request in flight.
func (pr *ProxyRequest) leaveLimits() {
	p := pr.proxy
	if pr.inFlight {
		pr.inFlight = false
		p.inFlight.Add(-1)
	}
	if pr.clientHeld {
		pr.clientHeld = false
		p.clients.leave(pr.clientKey)
		pr.clientKey = clientKey{}
	}
}

// clientTable counts the requests in flight of each client. It holds an
// entry only for a client with a request in flight, so it never has more
// entries than there are requests in flight.
type clientTable struct {
	mu   sync.Mutex
	m    map[clientKey]int
	peak int // the most entries m held
}

func (t *clientTable) enter(k clientKey, limit int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.m[k]
	if n >= limit {
		return false
	}
	if t.m == nil {
		t.m = make(map[clientKey]int)
	}
	t.m[k] = n + 1
	t.peak = max(t.peak, len(t.m))
	return true
}

func (t *clientTable) leave(k clientKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.m[k]; n > 1 {
		t.m[k] = n - 1
		return
	}
	delete(t.m, k)
	if len(t.m) == 0 && t.peak > 256 {
		// A Go map keeps the room it grew to: give back what a burst
		// of clients made it grow.
		t.m, t.peak = nil, 0
	}
}

// len returns the number of clients with a request in flight.
func (t *clientTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// shed answers a request refused by MaxInFlight (pr nil: before the
// ProxyRequest exists) or MaxPerClient: 503 or 429 with Retry-After, at
// once, through ErrorHandler if set. The refusal is in the Record
// (ErrorClass "overload"); it is logged with the others, at most once a
// second (see shedLog), not one line each.
func (p *Proxy) shed(w http.ResponseWriter, r *http.Request, pr *ProxyRequest, err *Error, start time.Time) {
	if err == errProxyBusy {
		p.shedBusy.refused(p.logBusy)
	} else {
		p.shedClient.refused(p.logClient)
	}
	var rec *Record
	if pr != nil {
		rec = &pr.rec // delivered by ServeHTTP's deferred finishExchange
		mergeHeader(w.Header(), pr.respHeader)
	} else if p.OnExchange != nil {
		rec = &Record{}
		rec.start(r, start)
		defer p.finishExchange(rec, nil)
	}
	if rec != nil {
		rec.Err, rec.Status = err, err.Status
	}
	w.Header().Set("Retry-After", retryAfter)
	if p.ErrorHandler != nil {
		p.ErrorHandler(w, r, err)
		return
	}
	writeError(w, err.Status)
}

func (p *Proxy) logBusy(n int64) {
	p.logger().Warn("sluice: requests refused with 503: too many in flight (Proxy.MaxInFlight)",
		"refused", n, "max_in_flight", p.maxInFlight, "in_flight", p.inFlight.Load())
}

func (p *Proxy) logClient(n int64) {
	p.logger().Warn("sluice: requests refused with 429: too many in flight from one client (Proxy.MaxPerClient)",
		"refused", n, "max_per_client", p.MaxPerClient, "clients", p.clients.len())
}

// shedLog logs refusals at most once a second: a line at the first one,
// then, while they go on, a line a second with how many there were since
// the last line, and a last line within a second after they stop. An
// overload must not add a log line per refused request.
type shedLog struct {
	n     atomic.Int64
	armed atomic.Bool // a line was logged and a timer is pending
}

// shedLogEvery is the shortest time between two lines of a shedLog.
const shedLogEvery = time.Second

func (s *shedLog) refused(log func(n int64)) {
	s.n.Add(1)
	if s.armed.CompareAndSwap(false, true) {
		log(s.n.Swap(0))
		time.AfterFunc(shedLogEvery, func() { s.flush(log) })
	}
}

func (s *shedLog) flush(log func(n int64)) {
	if n := s.n.Swap(0); n > 0 {
		log(n)
		time.AfterFunc(shedLogEvery, func() { s.flush(log) })
		return
	}
	s.armed.Store(false)
	// A refusal that came between the Swap and the Store found the log
	// armed and was not logged: take it up.
	if s.n.Load() > 0 && s.armed.CompareAndSwap(false, true) {
		log(s.n.Swap(0))
		time.AfterFunc(shedLogEvery, func() { s.flush(log) })
	}
}
