package proxyproto

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ErrNotServed is wrapped by Receive's error for a valid header that
// relays a connection the server does not serve: UDP, or a Unix socket.
var ErrNotServed = errors.New("proxyproto: relayed connection not served")

// Receive reads the header at the start of c (see Read) and returns the
// connection to serve in c's place, with the header:
//
//   - a relayed TCP connection over IPv4 or IPv6 (version 1 TCP4 and
//     TCP6, version 2 PROXY with TCP): c wrapped so that its RemoteAddr
//     is the header's source and its LocalAddr the header's destination
//     (see Wrap);
//   - version 2 LOCAL (the sender's health check), version 1 UNKNOWN and
//     version 2 PROXY with family UNSPEC: c itself, its own addresses
//     (the spec: "use the real connection endpoints");
//   - version 2 PROXY for UDP or a Unix socket: an error wrapping
//     ErrNotServed. The spec lets a receiver refuse these or use the
//     real endpoints; no sender relays an HTTP connection as such (HAProxy
//     sends LOCAL when it cannot describe the client), and the real
//     endpoint would give the client the load balancer's own address and
//     with it whatever that address is trusted with.
//
// On an error, c is left to the caller to close.
func Receive(c net.Conn) (net.Conn, Header, error) {
	h, err := Read(c)
	if err != nil {
		return nil, Header{}, err
	}
	switch {
	case h.Relayed():
		return Wrap(c, h.Source, h.Destination), h, nil
	case h.Command == Local || h.Family == Unspec:
		return c, h, nil
	}
	kind := "UDP"
	if h.Family == Unix {
		kind = "Unix socket"
	}
	return nil, h, fmt.Errorf("%w: a %s connection", ErrNotServed, kind)
}

// Wrap returns c with remote and local as its RemoteAddr and LocalAddr
// (*net.TCPAddr values). A *net.TCPConn gives a *TCPConn, which keeps the
// methods of *net.TCPConn that servers look for (ReadFrom for splice(2),
// SyscallConn to wait on the poller, CloseWrite); any other connection a
// *Conn.
func Wrap(c net.Conn, remote, local netip.AddrPort) net.Conn {
	ra, la := net.TCPAddrFromAddrPort(remote), net.TCPAddrFromAddrPort(local)
	if tc, ok := c.(*net.TCPConn); ok {
		return &TCPConn{TCPConn: tc, remote: ra, local: la}
	}
	return &Conn{Conn: c, remote: ra, local: la}
}

// Conn is a connection whose addresses a PROXY header gave.
type Conn struct {
	net.Conn
	remote, local *net.TCPAddr
}

// RemoteAddr returns the header's source: the client of the relayed
// connection.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the header's destination: the address the client
// connected to.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// NetConn returns the connection under c.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// TCPConn is a TCP connection whose addresses a PROXY header gave. Its
// other methods are those of *net.TCPConn.
type TCPConn struct {
	*net.TCPConn
	remote, local *net.TCPAddr
}

// RemoteAddr returns the header's source: the client of the relayed
// connection.
func (c *TCPConn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the header's destination: the address the client
// connected to.
func (c *TCPConn) LocalAddr() net.Addr { return c.local }

// NetConn returns the connection under c.
func (c *TCPConn) NetConn() net.Conn { return c.TCPConn }
