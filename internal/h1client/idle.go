package h1client

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Defaults for zero Client fields: how long an upstream may stall an
// exchange under way, nginx's proxy_read_timeout and proxy_send_timeout.
const (
	DefaultReadIdleTimeout  = 60 * time.Second
	DefaultWriteIdleTimeout = 60 * time.Second
)

// idleSlices says how late an idle bound d may cut: deadlines are moved
// at most once per d/idleSlices while bytes flow (so that a busy
// connection does not pay for a deadline on every read), and a stall is
// cut after between d and d + d/idleSlices.
const idleSlices = 4

// idleTimeoutError is the failure of an exchange whose upstream made no
// progress for an idle bound. It is a net.Error whose Timeout method
// reports true, and it wraps the deadline error (os.ErrDeadlineExceeded).
type idleTimeoutError struct {
	what string // "reading the response body", ...
	d    time.Duration
	err  error
}

func (e *idleTimeoutError) Error() string {
	return fmt.Sprintf("h1client: upstream made no progress for %v %s", e.d, e.what)
}

func (e *idleTimeoutError) Timeout() bool   { return true }
func (e *idleTimeoutError) Temporary() bool { return true }
func (e *idleTimeoutError) Unwrap() error   { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *Client) readIdle() time.Duration {
	return idleBound(c.ReadIdleTimeout, DefaultReadIdleTimeout)
}

func (c *Client) writeIdle() time.Duration {
	return idleBound(c.WriteIdleTimeout, DefaultWriteIdleTimeout)
}

// idleBound resolves an idle timeout field: zero means def, negative none.
func idleBound(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// lazyDeadline returns the deadline to set so that a wait starting now
// may last between d and d + d/idleSlices, and whether cur (the deadline
// in force) already does.
func lazyDeadline(cur, now time.Time, d time.Duration) (time.Time, bool) {
	left := cur.Sub(now)
	if !cur.IsZero() && left >= d && left <= d+d/idleSlices {
		return cur, true
	}
	return now.Add(d + d/idleSlices), false
}

// setReadDeadline and setWriteDeadline keep the deadlines in force in
// rdl and wdl, so that an unchanged one costs nothing.
func (pc *conn) setReadDeadline(t time.Time) {
	if !t.Equal(pc.rdl) {
		pc.rdl = t
		pc.nc.SetReadDeadline(t)
	}
}

func (pc *conn) setWriteDeadline(t time.Time) {
	if !t.Equal(pc.wdl) {
		pc.wdl = t
		pc.nc.SetWriteDeadline(t)
	}
}

// idleReader is what the connection's buffered reader reads from: in the
// body phase of an exchange (pc.bodyIdle > 0) each read of the socket
// may wait at most the read idle bound. A read returns as soon as a byte
// arrives, so a body that keeps coming, however slowly, is never cut.
type idleReader struct{ pc *conn }

func (r idleReader) Read(p []byte) (int, error) {
	pc := r.pc
	d := pc.bodyIdle
	if d <= 0 {
		return pc.nc.Read(p)
	}
	if t, ok := lazyDeadline(pc.rdl, time.Now(), d); !ok {
		pc.setReadDeadline(t)
	}
	n, err := pc.nc.Read(p)
	if err != nil && isTimeout(err) {
		err = &idleTimeoutError{what: "sending the response body", d: d, err: err}
	}
	return n, err
}

// idleWriter is what the connection's buffered writer writes to: its
// writes keep the write idle bound (see writeResumable), and never fail
// on a deadline while the upstream is taking bytes, so that the buffered
// writer, whose errors stick, sees only a real stall.
type idleWriter struct{ pc *conn }

func (w idleWriter) Write(p []byte) (int, error) {
	pc := w.pc
	total := 0
	err := pc.writeResumable(func() (int64, error) {
		n, err := pc.nc.Write(p[total:])
		total += n
		return int64(n), err
	})
	return total, err
}

// writeResumable runs op, a write to the socket that goes on where it
// stopped when called again (n is what it moved), until it completes. It
// fails only when the upstream took no byte for the write idle bound.
func (pc *conn) writeResumable(op func() (int64, error)) error {
	d := pc.client.writeIdle()
	if d <= 0 {
		_, err := op()
		return err
	}
	err := resumeWrites(d, &pc.wdl, pc.setWriteDeadline, pc.sendQueue, op)
	if err != nil && isTimeout(err) {
		err = &idleTimeoutError{what: "reading the request", d: d, err: err}
	}
	return err
}

// sendQueue returns how many bytes the socket holds that the upstream has
// not acknowledged, or -1 where that cannot be known.
func (pc *conn) sendQueue() int {
	if pc.probe == nil {
		return -1
	}
	return sendQueue(pc.probe.rc)
}

// resumeWrites runs op, a write that goes on where it stopped when called
// again (n is what it moved), until it completes or no byte moved for d.
// The deadline in force (*cur, changed by set) ends windows of one to
// two slices of d: it is set again at most once a slice while writes
// complete (so that a busy connection does not pay for a deadline per
// write), and when a window ends with op blocked, op is called again if
// bytes moved meanwhile: op took some, or the socket's send queue shrank
// (the upstream acknowledged bytes, where queued can tell; the kernel
// wakes a blocked writer only once a third of its buffer is free). So a
// write taken slowly but steadily is never cut, and a stall is cut
// after between d and d plus two slices. It returns op's timeout error.
func resumeWrites(d time.Duration, cur *time.Time, set func(time.Time), queued func() int, op func() (int64, error)) error {
	slice := d / idleSlices
	now := time.Now()
	last, lastQ := now, -1 // when bytes were last known to move; the queue then
	for {
		end := last.Add(d)
		if left := cur.Sub(now); cur.IsZero() || left < slice || left > 2*slice || cur.After(end) {
			dl := now.Add(2 * slice)
			if dl.After(end) {
				dl = end
			}
			set(dl)
		}
		n, err := op()
		if err == nil || !isTimeout(err) {
			return err
		}
		now = time.Now()
		if n > 0 {
			last = now
		}
		if q := queued(); q >= 0 {
			if lastQ >= 0 && q < lastQ {
				last = now
			}
			lastQ = q
		}
		if now.Sub(last) >= d {
			return err
		}
	}
}
