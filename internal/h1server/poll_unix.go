//go:build unix

package h1server

import (
	"io"
	"os"
	"syscall"
)

// canPoll reports whether an idle connection can wait for its next
// request on the poller without a buffer (a non-blocking read or peek on
// the descriptor): on Unix it can.
const canPoll = true

// fill reads what the socket has, without blocking: false (wait for the
// poller) when it has nothing. The buffer is taken from its pool only for
// the read, so that a waiting connection holds none.
func (c *conn) fill(fd uintptr) bool {
	if c.prep == nil {
		c.prep = prePool.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), *c.prep)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			c.releasePre()
			return false
		case err != nil:
			c.releasePre()
			c.fillErr = os.NewSyscallError("read", err)
		case n == 0:
			c.releasePre()
			c.fillErr = io.EOF
		default:
			c.pre = (*c.prep)[:n]
		}
		return true
	}
}

// peekTLS is waitTLS's poll: false (wait for the poller) while nothing
// arrived.
func (c *conn) peekTLS(fd uintptr) bool {
	for {
		n, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			return false
		case err != nil:
			c.fillErr = os.NewSyscallError("recvfrom", err)
		case n == 0:
			c.fillErr = io.EOF
		}
		return true
	}
}
