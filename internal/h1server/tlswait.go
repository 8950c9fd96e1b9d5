package h1server

import (
	"crypto/tls"
	"net"
	"syscall"
	"time"
)

// A *tls.Conn has no descriptor of its own to wait on, so without more
// the wait for a connection's next request would be a blocking read,
// holding the read buffer and the stack of the last handler. Instead, a
// TLS connection waits on the descriptor of the TCP connection under it:
// a non-blocking peek (MSG_PEEK, nothing consumed) says when bytes
// arrived, and crypto/tls then reads them as usual. What crypto/tls
// itself keeps while idle (its record buffer, sized by the largest record
// the client sent) cannot be given back from outside.
//
// The descriptor cannot announce what crypto/tls already read from it: a
// client may send its next request in the same segment as the last one,
// so before waiting, tlsBuffered asks crypto/tls for buffered bytes.
//
// While a request is served (its body read to the end), a goroutine
// watches the connection to notice a client that goes away and cancel
// the request (startWaiting); once the response is done, the same
// goroutine waits for the next request. Over TLS it waits on the
// descriptor too (watchTLS), holding no buffer, but a peek cannot tell the
// client's close_notify from the bytes of its next request (TLS 1.3
// encrypts alerts): bytes that arrive while the request is still served
// are read through crypto/tls, into pre. Before that goroutine starts,
// tlsQuiet checks that crypto/tls holds no bytes of a next request.

// aLongTimeAgo is a read deadline that has passed: a read with it returns
// what is buffered, or a timeout without a system call.
var aLongTimeAgo = time.Unix(1, 0)

// tlsRawConn returns the raw TCP connection under a *tls.Conn, or nil.
func tlsRawConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil
	}
	sc, ok := tc.NetConn().(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// tlsBuffered reports whether crypto/tls holds bytes of a next request
// (decrypted, or whole records still to decrypt), which a wait on the
// descriptor would not see. It reads with a deadline in the past: that
// returns what is buffered, or a timeout that crypto/tls does not keep as
// the connection's error.
func (c *conn) tlsBuffered() bool {
	if c.tlsRaw == nil {
		return false
	}
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
	_, err := c.br.Peek(1)
	return err == nil
}

// tlsQuiet reports whether a TLS connection may be watched on its
// descriptor while its request is served: crypto/tls holds no bytes of a
// next request, and the handler set no read deadline of its own (which
// the check, clearing the deadline, would undo).
func (c *conn) tlsQuiet() bool {
	if c.ownRead.Load() {
		return false
	}
	buffered := c.tlsBuffered()
	_ = c.nc.SetReadDeadline(time.Time{})
	return !buffered
}

// watchTLS is waitReadable while a request is served over TLS: it waits
// on the descriptor and, if bytes arrive while the request is still
// served, reads them through crypto/tls into pre: bytes of the next
// request, or the client's close_notify or close as an error. Once the
// response is done (the connection is no longer active), what arrives is
// the next request's, which serve reads.
func (c *conn) watchTLS() error {
	if err := c.waitTLS(); err != nil {
		return err
	}
	if c.state.Load() != stateActive {
		return nil
	}
	if c.prep == nil {
		c.prep = prePool.Get().(*[]byte)
	}
	n, err := c.nc.Read(*c.prep)
	if n > 0 {
		c.pre = (*c.prep)[:n]
		return nil
	}
	c.releasePre()
	return err
}

// waitTLS blocks until the TCP connection under a TLS connection has
// bytes to read, its peer closed it (io.EOF), or the read deadline
// passed.
func (c *conn) waitTLS() error {
	c.fillErr = nil
	if err := c.tlsRaw.Read(c.fillFn); err != nil {
		return err
	}
	return c.fillErr
}
