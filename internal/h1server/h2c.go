package h1server

import (
	"net"
	"time"
)

// preface is the HTTP/2 client connection preface (RFC 9113 §3.4). A
// client with prior knowledge that the server speaks HTTP/2 in cleartext
// (RFC 9113 §3.3, "h2c") starts with it instead of a request line.
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// hasPreface reports whether the connection's first bytes are the HTTP/2
// preface. It reads only as far as they match, so that an HTTP/1.x
// request shorter than the preface is never kept waiting for more bytes.
// A read error reports false: reading the request meets it again.
func (c *conn) hasPreface() bool {
	for n := 1; n <= len(preface); n++ {
		b, err := c.br.Peek(n)
		if err != nil || b[n-1] != preface[n-1] {
			return false
		}
	}
	return true
}

// handOffH2C gives the connection to Server.H2C, as a net.Conn that reads
// again the bytes read so far (the preface and whatever followed it).
// The connection is no longer the Server's.
func (c *conn) handOffH2C() {
	buf := make([]byte, c.br.Buffered()+len(c.pre))
	n, _ := c.br.Read(buf) // only what is buffered: it is not empty
	copy(buf[n:], c.pre)
	c.releasePre()
	c.releaseBuffers()
	c.state.Store(stateHijacked)
	c.srv.trackConn(c, false)
	_ = c.nc.SetReadDeadline(time.Time{})
	c.srv.H2C(&prefacedConn{Conn: c.nc, buf: buf})
}

// prefacedConn is a connection whose first bytes were already read: it
// returns them again before reading on.
type prefacedConn struct {
	net.Conn
	buf []byte
}

func (c *prefacedConn) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	if len(c.buf) == 0 {
		c.buf = nil
	}
	return n, nil
}
