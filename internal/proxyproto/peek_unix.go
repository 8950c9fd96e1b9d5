//go:build unix

package proxyproto

import (
	"os"
	"syscall"
)

// canPeek reports whether Read can peek at a TCP socket: on Unix it can.
const canPeek = true

type rawConn = syscall.RawConn

// peek waits until the socket has bytes to read and copies what it has
// (up to len(p)) without consuming it; 0 means the peer closed. The wait
// is the poller's, bounded by the connection's read deadline.
func peek(rc rawConn, p []byte) (int, error) {
	var n int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, _, serr = syscall.Recvfrom(int(fd), p, syscall.MSG_PEEK)
			switch {
			case serr == syscall.EINTR:
				continue
			case serr == syscall.EAGAIN || serr == syscall.EWOULDBLOCK:
				return false // nothing yet: wait for the poller
			}
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, os.NewSyscallError("recvfrom", serr)
	}
	return n, nil
}
