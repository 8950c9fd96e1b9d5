//go:build windows

package h1client

import (
	"syscall"
	"unsafe"
)

// fionread is FIONREAD of winsock2.h: _IOR('f', 127, u_long).
const fionread = 0x4004667f

// peekFD asks Winsock how many bytes wait in a socket
// (WSAIoctl(FIONREAD), which never blocks): recv with MSG_PEEK would
// block, the socket being in blocking mode for Go's IOCP poller. It
// cannot see a FIN: a connection the upstream closed while idle is found
// by the first read instead, and the request retried as Client.Do says.
func peekFD(fd uintptr, _ []byte) idleState {
	var avail, ret uint32
	err := syscall.WSAIoctl(syscall.Handle(fd), fionread, nil, 0,
		(*byte)(unsafe.Pointer(&avail)), uint32(unsafe.Sizeof(avail)), &ret, nil, 0)
	switch {
	case err != nil:
		return idleClosed
	case avail > 0:
		return idleData
	}
	return idleEmpty
}
