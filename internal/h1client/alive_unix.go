//go:build unix

package h1client

import (
	"net"
	"syscall"
)

// alive reports whether an idle pooled connection can still be used: the
// server has not closed it and sent nothing unsolicited. It peeks without
// blocking, so it costs one system call and no goroutine.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	ok = false
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0:
			ok = false // unsolicited bytes: the stream is out of step
		case n == 0 && err == nil:
			ok = false // EOF: closed by the server
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			ok = true // nothing to read: still open
		}
		return true
	})
	return err == nil && ok
}
