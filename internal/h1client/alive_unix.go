//go:build unix

package h1client

import (
	"net"
	"syscall"
)

// prober peeks at an idle connection without blocking. It is made once
// per connection, so that checking costs one system call and no
// allocation.
type prober struct {
	rc  syscall.RawConn
	fn  func(uintptr) bool // p.peek, bound once
	buf [1]byte
	ok  bool
}

func newProber(nc net.Conn) *prober {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &prober{rc: rc}
}

func (p *prober) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case n > 0:
		p.ok = false // unsolicited bytes: the stream is out of step
	case n == 0 && err == nil:
		p.ok = false // EOF: closed by the server
	default:
		p.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK // nothing to read: still open
	}
	return true
}

// alive reports whether an idle pooled connection can still be used: the
// server has not closed it and sent nothing unsolicited.
func (pc *conn) alive() bool {
	p := pc.probe
	if p == nil {
		return true
	}
	if p.fn == nil {
		p.fn = p.peek
	}
	return p.rc.Read(p.fn) == nil && p.ok
}
