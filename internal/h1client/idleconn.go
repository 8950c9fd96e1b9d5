package h1client

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// IdleDialer wraps dial so that every connection it makes is an
// IdleConn with the given bounds. With both bounds zero or negative it
// returns dial.
func IdleDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), read, write time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if read <= 0 && write <= 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return IdleConn(nc, read, write), nil
	}
}

// IdleConn returns nc with the idle bounds of Client on each call, for
// the connections of a client that has none of its own (net/http's
// Transport, which sluice uses for https:// upstreams, under its TLS):
// a Read fails when no byte came for read, a Write when the peer took
// no byte for write (within a half more), with an error that is a
// net.Error whose Timeout method reports true and that wraps
// os.ErrDeadlineExceeded. Progress resets a bound: a slow but steady
// peer is never cut. Zero or negative leaves that direction unbounded.
//
// The connection cannot see where an exchange starts and ends, so the
// read bound is paused from a write until a read returns bytes: the
// wait for an answer (the response head, however long the request body
// takes) is left to the client's own timeout (ResponseHeaderTimeout).
// Under TLS 1.3 the bytes may be a session ticket that the server sent
// after the request went out: the rest of the wait for the head is then
// bounded too. Otherwise the bound holds for every read, and so closes
// a connection idle in a pool for longer. Setting a deadline by hand (SetDeadline,
// SetReadDeadline, SetWriteDeadline) hands that direction to the
// caller for good, as a tunnel that runs its own timers over an
// upgraded connection needs.
func IdleConn(nc net.Conn, read, write time.Duration) net.Conn {
	c := &idleConn{Conn: nc, read: read, write: write}
	if sc, ok := nc.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	return c
}

type idleConn struct {
	net.Conn
	read, write time.Duration

	rmu      sync.Mutex
	rdl      time.Time // the read deadline set by the bound
	rManual  bool      // the caller set a read deadline: no bound
	awaiting bool      // a write since the last read of bytes: bound paused

	wmu     sync.Mutex
	wManual bool

	wloop sync.Mutex // one bounded Write at a time: it owns wdl
	wdl   time.Time  // the write deadline set by the bound
	rc    syscall.RawConn

	// stalled is the error of the bound that fired, if one did: the
	// connection is then dead, and every call fails with it at once, so
	// that whatever the client sees first (net/http's Transport races its
	// reader and writer) is the stall, and closing it does not wait (TLS
	// would try to write its close_notify into a full buffer for 5 s).
	stalled atomic.Pointer[idleTimeoutError]
}

func (c *idleConn) Read(p []byte) (int, error) {
	if e := c.stalled.Load(); e != nil {
		return 0, e
	}
	c.rmu.Lock()
	bounded := c.read > 0 && !c.rManual && !c.awaiting
	if bounded {
		if t, ok := lazyDeadline(c.rdl, time.Now(), c.read); !ok {
			c.rdl = t
			c.Conn.SetReadDeadline(t)
		}
	}
	c.rmu.Unlock()
	n, err := c.Conn.Read(p)
	if n > 0 && c.read > 0 {
		c.rmu.Lock()
		c.awaiting = false // the answer is coming: bounded again
		c.rmu.Unlock()
	}
	if err != nil {
		if bounded && isTimeout(err) && c.stillBounded(&c.rmu, &c.rManual) {
			e := &idleTimeoutError{what: "sending", d: c.read, err: err}
			c.stalled.CompareAndSwap(nil, e)
		}
		if e := c.stalled.Load(); e != nil {
			err = e
		}
	}
	return n, err
}

// wrote pauses the read bound until the peer answers, lifting a deadline
// that a read blocked meanwhile (a pool's idle wait) is under.
func (c *idleConn) wrote() {
	c.rmu.Lock()
	if !c.awaiting && c.read > 0 {
		c.awaiting = true
		if !c.rManual && !c.rdl.IsZero() {
			c.rdl = time.Time{}
			c.Conn.SetReadDeadline(c.rdl)
		}
	}
	c.rmu.Unlock()
}

func (c *idleConn) Write(p []byte) (int, error) {
	if e := c.stalled.Load(); e != nil {
		return 0, e
	}
	c.wrote()
	c.wmu.Lock()
	bounded := c.write > 0 && !c.wManual
	c.wmu.Unlock()
	if !bounded {
		return c.Conn.Write(p)
	}
	c.wloop.Lock()
	defer c.wloop.Unlock()
	total := 0
	err := resumeWrites(c.write, &c.wdl, c.setBoundWriteDeadline, c.sendQueue, func() (int64, error) {
		n, err := c.Conn.Write(p[total:])
		total += n
		return int64(n), err
	})
	if err != nil {
		if isTimeout(err) && c.stillBounded(&c.wmu, &c.wManual) {
			e := &idleTimeoutError{what: "reading", d: c.write, err: err}
			c.stalled.CompareAndSwap(nil, e)
		}
		if e := c.stalled.Load(); e != nil {
			err = e
		}
	}
	return total, err
}

// setBoundWriteDeadline sets the bound's write deadline unless the caller
// took the direction over meanwhile.
func (c *idleConn) setBoundWriteDeadline(t time.Time) {
	c.wdl = t
	c.wmu.Lock()
	if !c.wManual {
		c.Conn.SetWriteDeadline(t)
	}
	c.wmu.Unlock()
}

func (c *idleConn) sendQueue() int {
	if c.rc == nil {
		return -1
	}
	return sendQueue(c.rc)
}

func (c *idleConn) stillBounded(mu *sync.Mutex, manual *bool) bool {
	mu.Lock()
	defer mu.Unlock()
	return !*manual
}

// SetDeadline implements net.Conn; it ends both bounds.
func (c *idleConn) SetDeadline(t time.Time) error {
	c.rmu.Lock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	defer c.rmu.Unlock()
	c.rManual, c.wManual = true, true
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline implements net.Conn; it ends the read bound.
func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rManual = true
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn; it ends the write bound.
func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wManual = true
	return c.Conn.SetWriteDeadline(t)
}

// NetConn returns the wrapped connection.
func (c *idleConn) NetConn() net.Conn { return c.Conn }
