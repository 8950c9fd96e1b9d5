// Package connlimit bounds the connections a server holds open at once,
// by backpressure on its accept loop: a slot is taken before each Accept
// and given back when the connection accepted with it is closed, however
// it ends (served, handed to another server, hijacked), so that a server
// at its bound stops accepting and new connections wait in the kernel's
// listen queue. It is golang.org/x/net/netutil.LimitListener's mechanism,
// with a wrapper that keeps the methods servers look for on a connection
// (SyscallConn to wait on the poller, ReadFrom for splice(2), CloseWrite)
// and a way to wake a waiting accept loop when the server is stopped.
package connlimit

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Limiter hands out at most a fixed number of slots. Its methods are safe
// for concurrent use.
type Limiter struct {
	sem chan struct{} // a token per slot taken
}

// New returns a Limiter of max slots; max must be positive.
func New(max int) *Limiter {
	return &Limiter{sem: make(chan struct{}, max)}
}

// TryAcquire takes a slot if one is free, and reports whether it did.
func (l *Limiter) TryAcquire() bool {
	select {
	case l.sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// Acquire takes a slot, waiting until one is free, stop is closed or
// timeout fires (a nil channel never does); it reports whether it took
// one.
func (l *Limiter) Acquire(stop <-chan struct{}, timeout <-chan time.Time) bool {
	select {
	case l.sem <- struct{}{}:
		return true
	case <-stop:
		return false
	case <-timeout:
		return false
	}
}

// Release gives back a slot taken with Acquire or TryAcquire. Giving back
// a slot not taken is a bug: it panics.
func (l *Limiter) Release() {
	select {
	case <-l.sem:
	default:
		panic("connlimit: Release of a slot not taken")
	}
}

// InUse returns the number of slots taken.
func (l *Limiter) InUse() int { return len(l.sem) }

// Max returns the number of slots.
func (l *Limiter) Max() int { return cap(l.sem) }

// slot is one slot of a Limiter, given back once.
type slot struct {
	l    *Limiter
	done atomic.Bool
}

func (s *slot) release() {
	if s.done.CompareAndSwap(false, true) {
		s.l.Release()
	}
}

// Conn is a connection holding a slot of a Limiter until it is closed.
// Besides net.Conn it has the methods of *net.TCPConn that servers look
// for: SyscallConn, ReadFrom and CloseWrite, which use the underlying
// connection's when it has them.
type Conn struct {
	net.Conn
	slot *slot
}

// Wrap returns c holding a slot of l, taken by the caller: closing the
// result (or any connection Rewrap made of it) gives it back, once.
func Wrap(c net.Conn, l *Limiter) *Conn {
	return &Conn{Conn: c, slot: &slot{l: l}}
}

// Rewrap returns c in place of the connection under lc (a connection
// that read from it, such as one that consumed a PROXY protocol header),
// holding the same slot: closing either gives it back.
func Rewrap(lc *Conn, c net.Conn) *Conn {
	return &Conn{Conn: c, slot: lc.slot}
}

// Unwrap returns the connection under c, for reads that must see it
// (the PROXY protocol reader peeks on a *net.TCPConn). Closing it does
// not give the slot back.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Close closes the connection and gives its slot back.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.slot.release()
	return err
}

// errUnsupported is returned by the methods the underlying connection
// lacks.
var errUnsupported = errors.ErrUnsupported

// SyscallConn returns the underlying connection's raw connection, or an
// error if it has none.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errUnsupported
}

// ReadFrom implements io.ReaderFrom with the underlying connection's
// ReadFrom (splice(2) from a TCP source), or a copy through Write.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite half-closes the underlying connection, if it can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errUnsupported
}
