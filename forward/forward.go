// Package forward makes a sluice.Proxy a forward proxy: the proxy that
// browsers, curl -x and Go's http.Transport with Proxy set send their
// requests to, for any site. A Director sends absolute-form requests
// (GET http://host/path) to the host they name and opens CONNECT tunnels
// (HTTPS, and any TCP protocol) to the authority they name, under an
// egress policy checked on the resolved address at dial time; AllowHosts
// and BasicAuth are Authorizers for such proxies.
//
//	p := &sluice.Proxy{
//		Authorizer: sluice.Chain(forward.BasicAuth("proxy", check), forward.AllowHosts("example.com", "*.example.org")),
//		Director:   &forward.Director{},
//	}
//
// A forward proxy reaches whatever its clients name. The defaults are
// the safe ones: tunnels only to port 443, no connection to a loopback,
// private, link-local (cloud metadata) or otherwise non-public address
// (see Public), whatever name resolves to it, and no well-known port
// but 80 and 443 for plain requests. See docs/authorization.md.
package forward

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/canonical"
)

// Director is a sluice.Director for forward proxying. A request in
// absolute form (RFC 9112 §3.2.2) goes to the host it names; a CONNECT
// request (RFC 9110 §9.3.6) becomes a tunnel to its authority (its
// Out.URL is tcp://host:port, which the Proxy dials); any other request
// (origin form, for the proxy's own site) goes to Next, so one Proxy can
// be a forward and a reverse proxy at once.
//
// Forwarded requests and tunnels get a ProxyRequest.DialCheck that
// refuses every address that is not Public unless AllowAddrs has it,
// with 403 Forbidden; requests for Next keep Next's upstreams as they
// are. The zero value is ready to use: tunnels to port 443 only, public
// addresses only.
type Director struct {
	// Next directs origin-form requests. If nil, they get
	// sluice.ErrNoRoute (404, or the Proxy's Fallback).
	Next sluice.Director

	// ConnectPorts are the ports CONNECT tunnels may reach (Squid's
	// SSL_ports). If nil, 443 only. Other ports are refused with 403.
	ConnectPorts []uint16

	// Ports are the well-known ports (below 1024) other than 80 and 443
	// that absolute-form requests may reach; ports from 1024 up are
	// always allowed (Squid's Safe_ports). A request for another port,
	// such as SMTP's 25, is refused with 403: a forward proxy must not
	// let a client speak HTTP to a mail or a database server.
	Ports []uint16

	// AnyPort lets tunnels and absolute-form requests reach every port,
	// ignoring ConnectPorts and Ports: for test setups and tunnels to
	// trusted networks only.
	AnyPort bool

	// AllowAddrs are destination networks that forwarded requests and
	// tunnels may reach although they are not Public: an intranet served
	// through the proxy, or every address ("0.0.0.0/0" and "::/0") for a
	// test setup. IPv4-mapped IPv6 addresses are checked as IPv4.
	AllowAddrs []netip.Prefix

	// CheckHello, if not nil, is called for each tunnel with the TLS
	// ClientHello the client sends first through it (nil if the client
	// does not start with one): an error closes the tunnel before any
	// byte reaches the target. MatchServerName is the usual check. See
	// sluice.ProxyRequest.ClientHello.
	CheckHello func(pr *sluice.ProxyRequest, hello *tls.ClientHelloInfo) error
}

// Direct implements sluice.Director.
func (d *Director) Direct(pr *sluice.ProxyRequest) error {
	in := pr.In
	switch {
	case in.Method == http.MethodConnect:
		port, err := portOf(in.URL.Host)
		if err != nil {
			return err
		}
		if !d.AnyPort && !slices.Contains(d.connectPorts(), port) {
			return &sluice.Error{Status: http.StatusForbidden, Err: fmt.Errorf("forward: CONNECT to port %d is not allowed", port)}
		}
		pr.Out.URL.Scheme, pr.Out.URL.Host = "tcp", in.URL.Host
		pr.DialCheck = d.dialCheck
		if d.CheckHello != nil {
			pr.ClientHello = func(hello *tls.ClientHelloInfo) error { return d.CheckHello(pr, hello) }
		}
		return nil
	case in.URL.IsAbs():
		if in.URL.Scheme != "http" && in.URL.Scheme != "https" {
			return &sluice.Error{Status: http.StatusBadRequest, Err: fmt.Errorf("forward: scheme %q not supported", in.URL.Scheme)}
		}
		port := uint16(80)
		if in.URL.Scheme == "https" {
			port = 443
		}
		if in.URL.Port() != "" {
			var err error
			if port, err = portOf(in.URL.Host); err != nil {
				return err
			}
		}
		if !d.AnyPort && port < 1024 && port != 80 && port != 443 && !slices.Contains(d.Ports, port) {
			return &sluice.Error{Status: http.StatusForbidden, Err: fmt.Errorf("forward: port %d is not allowed", port)}
		}
		pr.Out.URL.Scheme, pr.Out.URL.Host = in.URL.Scheme, in.URL.Host
		pr.Out.Host = ""
		pr.DialCheck = d.dialCheck
		return nil
	case d.Next == nil:
		return sluice.ErrNoRoute
	default:
		return d.Next.Direct(pr)
	}
}

func (d *Director) connectPorts() []uint16 {
	if d.ConnectPorts == nil {
		return []uint16{443}
	}
	return d.ConnectPorts
}

// dialCheck is the DialCheck of forwarded requests and tunnels.
func (d *Director) dialCheck(ap netip.AddrPort) error {
	a := ap.Addr().Unmap()
	if Public(a) {
		return nil
	}
	for _, p := range d.AllowAddrs {
		if p.Contains(a) {
			return nil
		}
	}
	return &sluice.Error{Status: http.StatusForbidden, Err: fmt.Errorf("forward: %v is not a public address", a)}
}

// portOf returns the port of a canonical host:port.
func portOf(hostport string) (uint16, error) {
	_, p, err := net.SplitHostPort(hostport)
	if err == nil {
		var n uint64
		if n, err = strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
			return uint16(n), nil
		}
	}
	return 0, &sluice.Error{Status: http.StatusBadRequest, Err: fmt.Errorf("forward: bad authority %q", hostport)}
}

// MatchServerName is a Director.CheckHello that requires a tunnel to
// start with a TLS ClientHello whose server name (SNI) is the host the
// client named in its CONNECT, compared in canonical form (case, IDNA,
// trailing dot); a CONNECT to an IP address must come with no server
// name. It catches a client that asks the proxy for one host and the
// server behind it for another (the server may serve both, as a CDN
// does); it cannot see the Host header inside the encrypted stream.
func MatchServerName(pr *sluice.ProxyRequest, hello *tls.ClientHelloInfo) error {
	if hello == nil {
		return fmt.Errorf("forward: tunnel to %s does not start with a TLS ClientHello", pr.In.URL.Host)
	}
	host, _, _ := net.SplitHostPort(pr.In.URL.Host)
	name := ""
	if hello.ServerName != "" {
		n, err := canonical.Host(hello.ServerName, "")
		if err != nil {
			return fmt.Errorf("forward: bad server name %q", hello.ServerName)
		}
		name = n
	}
	if _, err := netip.ParseAddr(trimBrackets(host)); err == nil {
		host = "" // an IP literal: no SNI (RFC 6066 §3)
	}
	if name != host {
		return fmt.Errorf("forward: tunnel to %s asks for server name %q", pr.In.URL.Host, hello.ServerName)
	}
	return nil
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
