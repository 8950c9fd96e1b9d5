package sluice

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// idleExchange bounds the idleness of one exchange with an https:// or
// h2c:// upstream, which goes through net/http's Transport (HTTP/2
// multiplexes streams on a connection, so the bound cannot sit on the
// connection as it does for sluice's HTTP/1.1 engine). The clock runs
// while the Transport waits to take the next piece of the request body
// (the upstream is not reading: flow control) and while the client's copy
// waits for the next piece of the response body; it stops while a request
// body read waits for the client (the client's own bound covers that) and
// between the request's end and the response head (ResponseHeaderTimeout
// covers that). When it runs out, the exchange's context is canceled, which
// resets the stream, and the reads fail with an error that wraps
// os.ErrDeadlineExceeded (504 before the response started, an abort after).
//
// If the head arrived and the request body has not ended, running out
// also closes the response body: over HTTP/2 net/http's Transport ends a
// stream's response body only when its request body writer returns, and
// that writer may be blocked reading the client's body (a bidirectional
// stream whose client waits for the answer), which the Transport cannot
// interrupt (the Proxy keeps the inbound body open for retries).
// Canceling the context alone then left the client waiting for ever. (The
// ProxyRequest of such an exchange is not recycled: its body is not
// finished; see releaseProxyRequest.)
type idleExchange struct {
	d        time.Duration
	timer    *time.Timer
	cancel   context.CancelFunc
	fired    atomic.Bool
	gotHead  atomic.Bool
	bodyOpen atomic.Bool                   // the request body has not ended
	body     atomic.Pointer[io.ReadCloser] // the response body, once the head arrived
}

// roundTripIdle sends req with rt under an idle bound of d.
func roundTripIdle(rt http.RoundTripper, req *http.Request, d time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	x := &idleExchange{d: d, cancel: cancel}
	x.timer = time.AfterFunc(d, x.expire)
	x.timer.Stop()
	r := req.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &idleRequestBody{rc: r.Body, x: x}
		x.bodyOpen.Store(true)
		x.reset() // the Transport is due to take the body
	}
	res, err := rt.RoundTrip(r)
	if err != nil {
		x.stop()
		cancel()
		return nil, x.wrap(err)
	}
	rc := res.Body // the Transport's body itself: the wrappers' Close is not for other goroutines
	x.body.Store(&rc)
	x.gotHead.Store(true)
	x.reset()
	res.Body = &idleResponseBody{rc: res.Body, x: x}
	return res, nil
}

func (x *idleExchange) expire() {
	x.fired.Store(true)
	x.cancel()
	if b := x.body.Load(); b != nil && x.bodyOpen.Load() {
		(*b).Close() // wakes a read of the body blocked for good (see idleExchange)
	}
}

// reset and stop may run on the request body's goroutine and the
// response's at once: an AfterFunc timer allows that.
func (x *idleExchange) reset() { x.timer.Reset(x.d) }

func (x *idleExchange) stop() { x.timer.Stop() }

// wrap turns the error of a canceled exchange into the idle timeout it is.
func (x *idleExchange) wrap(err error) error {
	if err != nil && x.fired.Load() {
		return fmt.Errorf("sluice: upstream idle for %v: %w", x.d, os.ErrDeadlineExceeded)
	}
	return err
}

// idleRequestBody stops the clock while a read waits for the client and
// starts it again when the Transport has the piece to send.
type idleRequestBody struct {
	rc io.ReadCloser
	x  *idleExchange
}

func (b *idleRequestBody) Read(p []byte) (int, error) {
	if !b.x.gotHead.Load() {
		b.x.stop()
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.x.bodyOpen.Store(false)
	}
	if !b.x.gotHead.Load() {
		if err == nil {
			b.x.reset()
		} // at the end, the wait for the head is ResponseHeaderTimeout's
	}
	return n, err
}

func (b *idleRequestBody) Close() error { return b.rc.Close() }

// idleResponseBody starts the clock again with every piece of the
// response body.
type idleResponseBody struct {
	rc io.ReadCloser
	x  *idleExchange
}

func (b *idleResponseBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 && err == nil {
		b.x.reset()
	}
	return n, b.x.wrap(err)
}

func (b *idleResponseBody) Close() error {
	b.x.stop()
	err := b.rc.Close()
	b.x.cancel()
	return err
}
