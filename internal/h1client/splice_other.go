//go:build !linux

package h1client

import (
	"errors"
	"io"
	"syscall"
)

// spliceKeepsIdleBound is false where ReadFrom on a TCP connection copies
// through user space anyway: a body under a read idle bound is then
// copied through Body.Read, whose reads keep the bound.
const spliceKeepsIdleBound = false

func (pc *conn) readFromIdle(io.ReaderFrom, io.Reader, int64) (int64, error) {
	return 0, errors.ErrUnsupported
}

// sendQueue cannot tell how many bytes the peer has not acknowledged
// here: a blocked write shows progress only when it returns.
func sendQueue(syscall.RawConn) int { return -1 }
