package h2server

import (
	"net"
	"sync"
)

// Queue is a net.Listener whose connections are pushed to it by another
// accept loop. It lets a server that serves a net.Listener (h1server,
// net/http) serve connections that were accepted, and perhaps read from
// or handshaken, elsewhere.
type Queue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

// NewQueue returns an open Queue whose Addr is addr.
func NewQueue(addr net.Addr) *Queue {
	return &Queue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Push hands c to the server accepting from q, waiting until it does.
// It reports false, and leaves c to the caller, when q is closed.
func (q *Queue) Push(c net.Conn) bool {
	select {
	case <-q.done:
		return false
	default:
	}
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

// Accept implements net.Listener: it returns the next pushed connection,
// or net.ErrClosed once q is closed.
func (q *Queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: Accept and Push fail from now on.
func (q *Queue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

// Addr implements net.Listener.
func (q *Queue) Addr() net.Addr { return q.addr }
