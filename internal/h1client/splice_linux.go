//go:build linux

package h1client

import (
	"io"
	"syscall"
	"time"
	"unsafe"
)

// spliceKeepsIdleBound says that a body handed to an io.ReaderFrom keeps
// the read idle bound: see readFromIdle.
const spliceKeepsIdleBound = true

// readFromIdle hands the next n bytes of the body to rf (the server's
// ResponseWriter, which splices them to the client), in batches of what
// the socket already holds: rf never waits for the upstream, so no
// deadline can fire inside it (a failed ReadFrom fails the client's
// response for good), and the waits for the upstream happen here, each
// bounded by the read idle bound. A body that keeps coming, however
// slowly, is never cut; a slow client does not count.
func (pc *conn) readFromIdle(rf io.ReaderFrom, tc io.Reader, n int64) (int64, error) {
	pc.setReadDeadline(time.Time{}) // inside rf, reads must not time out
	var total int64
	for total < n {
		avail, err := pc.waitInput(pc.bodyIdle)
		if err != nil {
			return total, err
		}
		if avail == 0 {
			return total, io.ErrUnexpectedEOF
		}
		pc.lim = io.LimitedReader{R: tc, N: min(int64(avail), n-total)}
		k, err := rf.ReadFrom(&pc.lim)
		pc.lim.R = nil
		total += k
		if err != nil {
			return total, err
		}
		if k == 0 {
			return total, io.ErrNoProgress
		}
	}
	return total, nil
}

// waitInput returns how many bytes the socket holds, waiting up to d for
// the first one when it holds none; 0 and no error means the upstream
// closed the connection. The read deadline is none when it returns.
func (pc *conn) waitInput(d time.Duration) (int, error) {
	p := pc.probe
	if p.inqFn == nil {
		p.inqFn, p.awaitFn = p.inq, p.await
	}
	p.avail, p.eof, p.err = 0, false, nil
	if err := p.rc.Control(p.inqFn); err != nil {
		return 0, err
	}
	if p.avail == 0 && !p.eof && p.err == nil {
		pc.setReadDeadline(time.Now().Add(d))
		err := p.rc.Read(p.awaitFn) // parks until readable or the deadline
		pc.setReadDeadline(time.Time{})
		if err != nil {
			if isTimeout(err) {
				return 0, &idleTimeoutError{what: "sending the response body", d: d, err: err}
			}
			return 0, err
		}
	}
	return p.avail, p.err
}

// inq reads the socket's input queue length (ioctl SIOCINQ); when it is
// empty, a peek tells an EOF from nothing yet.
func (p *prober) inq(fd uintptr) {
	var n int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
		p.err = e
		return
	}
	if n > 0 {
		p.avail = int(n)
		return
	}
	switch peekFD(fd, p.buf[:]) {
	case idleData:
		p.avail = 1 // arrived between the two calls
	case idleClosed:
		p.eof = true
	}
}

func (p *prober) await(fd uintptr) bool {
	p.inq(fd)
	return p.avail > 0 || p.eof || p.err != nil
}

// sendQueue returns how many bytes a socket holds that its peer has not
// acknowledged (ioctl SIOCOUTQ), or -1 if it cannot tell.
func sendQueue(rc syscall.RawConn) int {
	n := int32(-1)
	rc.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n))); e != 0 {
			n = -1
		}
	})
	return int(n)
}
