//go:build unix

package h1client

import "syscall"

// peekFD looks at a socket with recv(MSG_PEEK|MSG_DONTWAIT): one system
// call that never blocks and leaves any byte where it is.
func peekFD(fd uintptr, buf []byte) idleState {
	for {
		n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0:
			return idleData
		case err == nil:
			return idleClosed // EOF
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			return idleEmpty
		default:
			return idleClosed // reset, or any other failure
		}
	}
}
