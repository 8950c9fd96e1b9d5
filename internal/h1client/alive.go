package h1client

import (
	"net"
	"syscall"
)

// idleState is what a non-blocking look at a connection between two
// exchanges found.
type idleState uint8

const (
	idleEmpty   idleState = iota // nothing to read: the connection may carry another exchange
	idleData                     // unread bytes: the upstream sent more than its framing
	idleClosed                   // the upstream closed the connection (or it failed)
	idleUnknown                  // the connection or the platform cannot tell: never reuse
)

// prober looks at a connection's socket without blocking and without
// reading. It is made once per connection, so that a look costs one
// system call and no allocation.
type prober struct {
	rc    syscall.RawConn
	fn    func(uintptr) // p.peek, bound once
	buf   [1]byte
	state idleState

	// readFromIdle's look at the input queue (Linux).
	inqFn   func(uintptr)
	awaitFn func(uintptr) bool
	avail   int
	eof     bool
	err     error
}

// newProber returns nil when nc exposes no socket (a net.Pipe, a wrapper
// without SyscallConn): such a connection is never reused.
func newProber(nc net.Conn) *prober {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &prober{rc: rc}
	p.fn = p.peek
	return p
}

func (p *prober) peek(fd uintptr) {
	p.state = peekFD(fd, p.buf[:])
}

// idleState reports what the connection's socket holds. The bytes left in
// the connection's buffered reader are the caller's to check.
func (pc *conn) idleState() idleState {
	p := pc.probe
	if p == nil {
		return idleUnknown
	}
	p.state = idleUnknown
	// Control, not Read: the look never blocks, and it must not fail on
	// a read deadline left from the last exchange.
	if err := p.rc.Control(p.fn); err != nil {
		return idleClosed
	}
	return p.state
}

// reusable reports whether the connection provably holds no byte past the
// last response's framing, in its buffered reader or its socket, so that
// it may carry another exchange. It is asked when the connection goes
// back to the pool, about the buffered reader only (no system call), and
// before it is taken out, about both (as nginx closes a cached upstream
// connection that turns readable): bytes in the socket, whether they came
// with the response or while the connection sat in the pool, would
// otherwise be read as the next request's response. The look at the
// socket is made once per exchange, at the last moment. An upstream that
// sent such bytes is logged, once per connection; when says at which of
// the two moments they were seen.
func (pc *conn) reusable(when string, socket bool) bool {
	state := idleData
	if pc.br == nil || pc.br.Buffered() == 0 {
		state = idleEmpty
		if socket {
			state = pc.idleState()
		}
	}
	switch state {
	case idleEmpty:
		return true
	case idleData:
		pc.client.logger().Warn("sluice: upstream sent more data than its framing; connection closed",
			"upstream", pc.pool.addr, "seen", when)
	}
	return false
}
