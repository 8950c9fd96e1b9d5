package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1wire"
	"github.com/sluiceproxy/sluice/internal/park"
)

// Connection states. Shutdown closes only idle connections, and the
// goroutine that wakes an idle connection claims it first. A new
// connection, whose first request may be on its way, is not idle: it
// closes on its ReadHeaderTimeout if nothing comes.
const (
	stateIdle int32 = iota
	stateActive
	stateHijacked
	stateClosed
	stateNew
)

// Messages of a handler to the goroutine waiting for the next request.
const (
	handoffKeep     = iota // the response is done: serve the next request
	handoffClose           // the connection closed
	handoffHijacked        // the handler took the connection
)

// conn is one client connection. It is owned by one goroutine at a time:
// the one serving a request, or the one waiting for the next request once
// the handler handed over.
type conn struct {
	srv        *Server
	nc         net.Conn
	wv         net.Conn        // what writev writes to: see newConn
	rc         syscall.RawConn // nil when the connection has no descriptor to wait on
	ctx        context.Context // carries http.LocalAddrContextKey
	remoteAddr string
	state      atomic.Int32

	// While a request is served, waiting tells whether a goroutine waits
	// for the next request (see await); the handler hands over through
	// handoff, and cancel ends the request's context.
	waiting bool
	handoff chan int
	cancel  context.CancelFunc

	upgrade bool // the request asks for a protocol upgrade

	// readIdle, while not 0, is the idle bound of the request body being
	// read: reads from the socket renew the read deadline (see
	// renewed). It is set by the serving goroutine before the handler
	// runs and cleared by the body's reader (under the body's lock) at
	// its end; readArmed is when the deadline was set. ownRead tells
	// that the handler set a read deadline of its own, which ends the
	// renewals for its request.
	readIdle  time.Duration
	readArmed stamp
	ownRead   atomic.Bool

	// writeIdle is WriteIdleTimeout, renewed before writes (see
	// armWrite) unless ownWrite tells that the handler set a write
	// deadline of its own; writeArmed is when it was set.
	writeIdle  time.Duration
	writeArmed stamp
	ownWrite   atomic.Bool

	tlsState *tls.ConnectionState // of a *tls.Conn, once its handshake is done

	// TLS and h2c: see tlswait.go and h2c.go.
	tlsRaw  syscall.RawConn // the TCP connection under a *tls.Conn
	tlsIdle bool            // await waits on tlsRaw
	tlsBusy bool            // await watches a request's connection
	peekBuf [1]byte
	sniff   bool // look for the HTTP/2 preface before the first request

	// Buffers, held only while a request is read or answered.
	br   *bufio.Reader
	lr   h1wire.LimitReader
	tp   textproto.Reader
	outp *[]byte // the pooled output buffer behind out
	out  []byte
	iov  [4][]byte

	// The goroutine waiting for the next request reads its first bytes
	// itself (one system call, not a peek and a read): pre holds them,
	// in the pooled buffer prep, until the reader takes them. waitMu is
	// held by a waiting goroutine started during a request, so that
	// Hijack can know it is gone.
	fillFn  func(uintptr) bool
	pre     []byte
	prep    *[]byte
	fillErr error
	waitMu  sync.Mutex

	// A connection idle for parkAfter is parked (see park): idleUntil
	// is when its wait for a request ends (zero: never), watch its
	// parked wait.
	idleUntil stamp
	watch     atomic.Pointer[park.Watch]
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, wv: nc, remoteAddr: nc.RemoteAddr().String(), handoff: make(chan int, 1)}
	// Under a wrapper that only watches Close (the Server's connection
	// limit), writes go to the TCP connection itself: net.Buffers reaches
	// writev(2) only through *net.TCPConn.
	if u, ok := nc.(interface{ Unwrap() net.Conn }); ok {
		if tc, ok := u.Unwrap().(*net.TCPConn); ok {
			c.wv = tc
		}
	}
	c.ctx = context.WithValue(context.Background(), http.LocalAddrContextKey, nc.LocalAddr())
	c.writeIdle = s.writeIdleTimeout()
	c.lr = h1wire.LimitReader{R: (*source)(c), N: -1, TooLarge: errHeaderTooLarge}
	c.state.Store(stateNew)
	if canPoll {
		// Wait for the next request on the poller, holding no buffer.
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				c.rc = rc
				c.fillFn = c.fill
			}
		}
		if c.tlsRaw = tlsRawConn(nc); c.tlsRaw != nil {
			c.fillFn = c.peekTLS
		}
	}
	c.sniff = s.H2C != nil
	return c
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	prePool    = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}
)

// source is what the connection's reader reads: the bytes the waiting
// goroutine read, then the socket.
type source conn

func (s *source) Read(p []byte) (int, error) {
	c := (*conn)(s)
	if len(c.pre) == 0 {
		if c.readIdle > 0 && !c.ownRead.Load() && !renewed(c.readArmed, c.readIdle) {
			c.readArmed = now()
			_ = c.nc.SetReadDeadline(c.readArmed.time().Add(c.readIdle))
		}
		return c.nc.Read(p)
	}
	n := copy(p, c.pre)
	c.pre = c.pre[n:]
	if len(c.pre) == 0 {
		c.releasePre()
	}
	return n, nil
}

func (c *conn) releasePre() {
	if c.prep != nil {
		prePool.Put(c.prep)
		c.prep, c.pre = nil, nil
	}
}

func (c *conn) acquireReader() {
	if c.br == nil {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(&c.lr)
		c.tp = textproto.Reader{R: c.br}
	}
}

// releaseBuffers gives the buffers back; the reader only when it holds no
// unread byte.
func (c *conn) releaseBuffers() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br, c.tp = nil, textproto.Reader{}
	}
	c.releaseOut()
}

// close closes the socket and forgets the connection. The goroutine that
// owns it releases the buffers.
func (c *conn) close() {
	if c.state.Swap(stateClosed) != stateClosed {
		c.nc.Close()
	}
	c.srv.trackConn(c, false)
}

// await runs on a fresh goroutine, so that a connection waiting for its
// next request holds only the small stack of the wait, no buffer. It waits
// until the client sends something (or goes away), then serves.
//
// With busy set, a request is still being served: a client that goes away
// meanwhile cancels its context, and the handler's handoff says when the
// connection is free.
func (c *conn) await(busy bool) {
	// busy: startWaiting holds waitMu for this goroutine.
	for {
		err := c.waitReadable()
		if busy {
			if err != nil && !isTimeout(err) && c.state.Load() != stateHijacked {
				// The client went away, or Close closed the connection:
				// stop the request's work.
				c.cancel()
			}
			msg := <-c.handoff
			busy = false
			c.cancel = nil // the request's context, done
			c.waitMu.Unlock()
			if msg == handoffHijacked {
				return // what was read is the hijacker's now
			}
			if msg != handoffKeep {
				c.releasePre()
				return
			}
			if err != nil && isTimeout(err) {
				// A deadline set for the handler, not an idle timeout
				// (the handler set that one when it handed over): wait
				// again.
				c.tlsIdle = c.tlsRaw != nil
				continue
			}
		}
		if err != nil && isTimeout(err) {
			switch c.park() {
			case parked:
				return
			case waitMore:
				continue
			}
		}
		if err != nil || !(c.state.CompareAndSwap(stateIdle, stateActive) || c.state.CompareAndSwap(stateNew, stateActive)) {
			c.close()
			c.releasePre()
			c.releaseBuffers()
			return
		}
		c.serve()
		return
	}
}

// growStack grows a fresh goroutine's stack, in one copy while it is
// shallow, to 16 KiB, what serving most requests through the proxy takes.
// A request is served on the goroutine that waited for it, which starts
// with a small stack; grown frame by frame under the handler's deep call
// path, it was copied three times per request, each copy walking every
// frame: 7.9% of the proxy's CPU in scenario A, 2.7% with growStack
// (perf, 10 s of wrk -c50). 16 KiB is the largest stack the runtime
// caches per P; 32 KiB (no growth left at all) measured the same, its
// allocation going to the heap instead. A goroutine whose stack is large
// enough already only pays the check.
//
//go:noinline
func growStack() byte {
	var frame [growFrame]byte
	return frame[stackIndex]
}

// growFrame is the frame that makes the runtime double a fresh stack
// straight to 16 KiB: more than 8 KiB with the runtime's guard.
const growFrame = 9 << 10

// stackIndex, never written, keeps the frame from being optimized away.
var stackIndex int

// parkAfter is how long a connection waits for its next request on a
// goroutine (woken by the runtime's poller, the cheapest way back) before
// it is parked, its goroutine ended: long enough that a busy keep-alive
// client is never parked between requests, short against the minutes an
// idle browser connection stays open. Shorter is less memory when many
// clients arrive at once: each waiting goroutine holds the stack its
// request grew (16 KiB), and what they held stays in the process after
// they end. 5,000 connections opened in under a second and left idle
// cost 3.2 KiB of RSS each with 100 ms, 4.5 KiB with 500 ms.
const parkAfter = 100 * time.Millisecond

// setIdleDeadline starts a wait for a request that may last d (no limit
// if d <= 0): the read deadline is parkAfter from now when the connection
// can be parked and its idle time is longer, the end of its idle time
// otherwise.
func (c *conn) setIdleDeadline(d time.Duration) {
	t := now()
	c.idleUntil = 0
	if d > 0 {
		c.idleUntil = t + stamp(d)
	}
	dl := c.idleUntil
	if c.parkable() && (d <= 0 || d > parkAfter) {
		dl = t + stamp(parkAfter)
	}
	_ = c.nc.SetReadDeadline(dl.time())
}

func (c *conn) parkable() bool {
	return park.Supported && (c.rc != nil || c.tlsRaw != nil)
}

// What park did.
const (
	parked   = iota // the connection is parked: its goroutine ends
	waitMore        // it could not be parked: wait on, up to idleUntil
	idleOver        // its idle time is over
)

// park parks a connection whose wait for a request reached parkAfter,
// until its client sends something or hangs up (then unparked serves it
// on a new goroutine) or its idle time ends (then unparked closes it).
func (c *conn) park() int {
	left := time.Duration(1<<63 - 1)
	if c.idleUntil != 0 {
		if left = -c.idleUntil.since(); left <= 0 {
			return idleOver
		}
	}
	if !c.parkable() {
		return idleOver // the read deadline was the end of the idle time
	}
	rc := c.rc
	if rc == nil {
		rc = c.tlsRaw
	}
	w, err := park.Start(rc, left, c.unparked)
	if err != nil {
		_ = c.nc.SetReadDeadline(c.idleUntil.time())
		return waitMore
	}
	c.watch.Store(w)
	// Shutdown or Close may have closed the connection before the watch
	// was stored, not knowing it: then it is this goroutine's to end.
	if st := c.state.Load(); (st != stateIdle && st != stateNew) && c.unpark() {
		c.close()
	}
	return parked
}

// unpark stops the connection's parked wait, if any, and reports whether
// it did (false: none, or unparked runs or is about to).
func (c *conn) unpark() bool {
	if w := c.watch.Swap(nil); w != nil {
		return w.Stop()
	}
	return false
}

// unparked runs, on a goroutine of its own, when a parked connection's
// client sent something or hung up (ready), or its idle time ended.
func (c *conn) unparked(ready bool) {
	c.watch.Store(nil)
	if !ready {
		c.close()
		return
	}
	_ = c.nc.SetReadDeadline(c.idleUntil.time())
	c.tlsIdle = c.tlsRaw != nil
	c.await(false)
}

// waitReadable blocks until the connection has bytes to read (read into
// pre), its peer closed it (io.EOF), or its read deadline passed.
func (c *conn) waitReadable() error {
	if c.rc == nil {
		if c.tlsIdle {
			c.tlsIdle = false
			return c.waitTLS()
		}
		if c.tlsBusy {
			c.tlsBusy = false
			return c.watchTLS()
		}
		c.acquireReader()
		_, err := c.br.Peek(1)
		return err
	}
	if len(c.pre) > 0 {
		return nil
	}
	c.fillErr = nil
	if err := c.rc.Read(c.fillFn); err != nil {
		return err
	}
	return c.fillErr
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// renewEvery is how often, in parts of an idle bound, a deadline for it is
// renewed while there is traffic: setting a deadline costs about 0.5 us
// (three clock reads and a timer update) on a VM with kvm-clock, finding
// out that it is not due yet one monotonic clock read. A peer idle for a
// bound is thus cut between 7/8 of it and all of it.
const renewEvery = 8

// renewed reports whether a deadline d after armed is recent enough to
// need no renewal yet.
func renewed(armed stamp, d time.Duration) bool {
	return armed != 0 && armed.since() < d/renewEvery
}

// A stamp is a reading of the monotonic clock, kept as the time since
// epoch: 8 bytes where a time.Time takes 24, for the instants every
// connection keeps. Zero is none.
type stamp time.Duration

var epoch = time.Now()

// now returns the current stamp, never zero.
func now() stamp { return stamp(time.Since(epoch)) + 1 }

// time returns s as a time.Time; a zero stamp is the zero Time (no
// deadline).
func (s stamp) time() time.Time {
	if s == 0 {
		return time.Time{}
	}
	return epoch.Add(time.Duration(s))
}

// since returns the time elapsed since s.
func (s stamp) since() time.Duration { return time.Duration(now() - s) }

// idleError is a read or write on the connection that waited longer than
// an idle bound. It wraps the socket's timeout, so that errors.Is(err,
// os.ErrDeadlineExceeded) holds, and is a net.Error whose Timeout is true.
type idleError struct {
	op    string // "reading the request body", ...
	bound time.Duration
	err   error
}

func (e *idleError) Error() string {
	return "h1server: " + e.op + ": client idle for " + e.bound.String() + ": " + e.err.Error()
}

func (e *idleError) Unwrap() error   { return e.err }
func (e *idleError) Timeout() bool   { return true }
func (e *idleError) Temporary() bool { return false }

// serve reads and answers requests on the calling goroutine for as long
// as bytes of the next request are already buffered; then it hands the
// connection to a waiting goroutine and returns.
func (c *conn) serve() {
	growStack()
	for {
		c.acquireReader()
		c.readIdle, c.readArmed = 0, 0
		c.ownRead.Store(false)
		if c.ownWrite.Swap(false) {
			_ = c.nc.SetWriteDeadline(time.Time{}) // the last handler's
			c.writeArmed = 0
		}
		_ = c.nc.SetReadDeadline(deadline(c.srv.readHeaderTimeout()))
		if c.sniff {
			c.sniff = false
			if c.hasPreface() {
				c.handOffH2C()
				return
			}
		}
		ctx, cancel := context.WithCancel(c.ctx)
		req, w, err := c.readRequest(ctx)
		if err != nil {
			cancel()
			c.reject(err)
			return
		}
		_ = c.nc.SetReadDeadline(time.Time{})
		c.cancel = cancel
		c.waiting = false
		b, hasBody := req.Body.(*body)
		if hasBody {
			c.readIdle = c.srv.bodyIdleTimeout()
		} else {
			c.startWaiting()
		}
		ok := c.runHandler(w, req)
		cancel()
		if w.hijacked {
			return // the connection is the hijacker's, even after a panic
		}
		if !ok {
			if hasBody {
				// Close before abandon: a read of the body still in
				// progress on another goroutine of the handler (a proxy's
				// upstream writer waiting for a client that waits for the
				// answer) holds the body until the socket fails, and
				// abandon waits for it. The client is cut at once.
				c.close()
				b.abandon()
			}
			c.abort()
			return
		}
		keep := w.finish()
		drained := !hasBody || b.closeAndDrain()
		if !drained {
			// The client may still be sending the body it was refused:
			// let it read the response before the connection goes.
			c.lingerClose()
			c.releaseBuffers()
			return
		}
		if c.waiting {
			c.handOver(keep)
			return
		}
		if !keep {
			c.close()
			c.releaseBuffers()
			return
		}
		if c.br.Buffered() > 0 || c.tlsBuffered() {
			continue // a pipelined request: serve it on this goroutine
		}
		c.releaseBuffers()
		if !c.state.CompareAndSwap(stateActive, stateIdle) {
			c.close()
			return
		}
		c.setIdleDeadline(c.srv.idleTimeout())
		if c.rc == nil && c.tlsRaw == nil {
			// No descriptor to wait on: wait on this goroutine, with
			// the idle timeout until the next request's first byte.
			if err := c.waitReadable(); err != nil || !c.state.CompareAndSwap(stateIdle, stateActive) {
				c.close()
				c.releaseBuffers()
				return
			}
			continue
		}
		c.tlsIdle = c.tlsRaw != nil
		c.cancel = nil // the request's context, done
		go c.await(false)
		return
	}
}

// startWaiting starts the goroutine that waits for the next request while
// this one is served: when the request's body is read to the end (or it
// has none), nothing is buffered past it, and nothing else will read the
// connection before the response (an upgrade may hijack it).
func (c *conn) startWaiting() {
	if (c.rc == nil && c.tlsRaw == nil) || c.br.Buffered() > 0 || c.upgrade || c.srv.closing.Load() {
		return
	}
	if c.tlsRaw != nil && !c.tlsQuiet() {
		return
	}
	c.waiting = true
	c.tlsBusy = c.tlsRaw != nil
	// Locked here, not in the goroutine: a Hijack right after this must
	// wait for the goroutine, even one not yet running, or it would
	// start after the hijack and read the hijacker's bytes.
	c.waitMu.Lock()
	go c.await(true)
}

// handOver passes the connection to the goroutine waiting for the next
// request. Nothing of c may be touched after it.
func (c *conn) handOver(keep bool) {
	c.releaseBuffers()
	if !keep || !c.state.CompareAndSwap(stateActive, stateIdle) {
		c.close()
		c.handoff <- handoffClose
		return
	}
	c.setIdleDeadline(c.srv.idleTimeout())
	c.handoff <- handoffKeep
}

// abort ends a connection whose handler panicked: the client sees the
// response cut short.
func (c *conn) abort() {
	c.close()
	if c.waiting {
		c.handoff <- handoffClose
	}
	c.releaseBuffers()
}

// runHandler calls the handler, and reports false if it panicked. A panic
// with http.ErrAbortHandler is the quiet way to abort a response.
func (c *conn) runHandler(w *response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logger().Error("h1server: panic serving "+c.remoteAddr, "panic", v, "stack", string(buf))
			}
			ok = false
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	return true
}

// reject answers a request that could not be read, when there is someone
// to answer, and closes the connection.
func (c *conn) reject(err error) {
	var re *requestError
	if !errors.As(err, &re) {
		c.close()
		c.releaseBuffers()
		return
	}
	if re == errHeadTimeout {
		c.srv.logger().Info("h1server: request head timed out", "remote", c.remoteAddr,
			"timeout", c.srv.readHeaderTimeout())
	}
	msg := statusLine(re.status)
	if re.msg != "" {
		msg += ": " + re.msg
	}
	b := append(c.outBuf(), "HTTP/1.1 "...)
	b = append(b, statusLine(re.status)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, "\r\n\r\n"...)
	c.out = append(b, msg...)
	c.ownWrite.Store(true) // a bound of its own, whatever WriteIdleTimeout
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if c.flushOut(nil, nil, nil) == nil {
		// The rest of the refused request may still be coming.
		c.lingerClose()
	}
	c.close()
	c.releaseBuffers()
}

// Bounds of lingerClose.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 16 << 20
)

// lingerClose closes a connection whose request was not read to its end
// (a body left unread, a refused request). Closing a socket with unread
// bytes makes the kernel send a reset, which can destroy the response in
// the client's receive buffer before the client read it; so the write
// side closes first, and what the client still sends is read and dropped
// until it closes too, for a while (net/http sleeps instead).
func (c *conn) lingerClose() {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok && tc.CloseWrite() == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerTime))
		bp := copyPool.Get().(*[]byte)
		for n := 0; n < lingerBytes; {
			m, err := c.nc.Read(*bp)
			n += m
			if err != nil {
				break
			}
		}
		copyPool.Put(bp)
	}
	c.close()
}

var errHeaderTooLarge = errors.New("request header too large")
