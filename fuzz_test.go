package sluice

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzSanitizeRequest parses arbitrary bytes as a request the way the
// server does, then checks what the proxy would forward: no hop-by-hop
// field survives (but "TE: trailers" and a re-announced upgrade), every
// header stays valid on the wire, and the forwarding headers are the
// proxy's own.
func FuzzSanitizeRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-A, close\r\nX-A: 1\r\nTE: trailers\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4, ::1\r\nForwarded: for=\"[::1]\"\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add(s, "127.0.0.1:1234")
	}
	f.Fuzz(func(t *testing.T, raw, remote string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		r.RemoteAddr = remote
		if !serverAccepts(r) || checkRequest(r) != nil {
			return
		}
		p := &Proxy{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
		pr := p.newProxyRequest(r)
		h := pr.Out.Header
		for _, k := range hopHeaders {
			if _, ok := h[k]; !ok {
				continue
			}
			switch {
			case k == "Te" && len(h[k]) == 1 && h[k][0] == "trailers":
			case (k == "Connection" || k == "Upgrade") && pr.upgrade != "":
			default:
				t.Fatalf("hop-by-hop %s survived: %q", k, h[k])
			}
		}
		if pr.upgrade != "" && strings.EqualFold(pr.upgrade, "h2c") {
			t.Fatalf("h2c upgrade forwarded")
		}
		for k, vv := range h {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("invalid header name %q", k)
			}
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("invalid value for %s: %q", k, v)
				}
			}
		}
		if len(h["X-Forwarded-For"]) != 1 || len(h["Forwarded"]) != 1 {
			t.Fatalf("forwarding headers not set once: %q %q", h["X-Forwarded-For"], h["Forwarded"])
		}
		if !isTrusted(peerAddr(r), p.TrustedProxies) {
			if got, want := h.Get("X-Forwarded-For"), addrOrUnknown(peerAddr(r)); got != want {
				t.Fatalf("untrusted peer: X-Forwarded-For %q, want %q", got, want)
			}
		}
	})
}

// serverAccepts mirrors the checks net/http's server adds to ReadRequest
// before a handler runs (server.go readRequest).
func serverAccepts(r *http.Request) bool {
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return len(r.Header["Host"]) <= 1
}

func addrOrUnknown(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return "unknown"
}

// FuzzClientAddr checks that the client address never comes from a
// header of an untrusted peer, and is always a valid address or invalid.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.1:5", "1.2.3.4, 10.0.0.2")
	f.Add("192.0.2.1:5", "1.2.3.4")
	f.Add("[::ffff:10.0.0.1]:5", "garbage, 10.0.0.9")
	f.Add("10.0.0.1:5", ",,,")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := clientAddr(r, peerAddr(r), trusted)
		peer := peerAddr(r)
		if !isTrusted(peer, trusted) && got != peer {
			t.Fatalf("untrusted peer %v: client %v taken from the header", peer, got)
		}
		if got == peer || !got.IsValid() {
			return // an invalid address is an unknown client, never trusted
		}
		// Otherwise the address must be one of the header's entries.
		for part := range strings.SplitSeq(xff, ",") {
			if a, ok := parseForwardedFor(part); ok && a == got {
				return
			}
		}
		t.Fatalf("client %v neither the peer %v nor an entry of %q", got, peer, xff)
	})
}

// FuzzForwardedElement checks that what the proxy writes in Forwarded is
// a valid header value whatever the Host header held.
func FuzzForwardedElement(f *testing.F) {
	f.Add("example.com:8080")
	f.Add(`a"b\c`)
	f.Add("")
	f.Fuzz(func(t *testing.T, host string) {
		if !httpguts.ValidHeaderFieldValue(host) {
			return
		}
		v := forwardedElement(netip.MustParseAddr("::1"), "::1", host, "http")
		if !httpguts.ValidHeaderFieldValue(v) {
			t.Fatalf("invalid Forwarded value %q for host %q", v, host)
		}
	})
}

// FuzzConnectAuthority checks the canonical form of CONNECT targets: an
// accepted authority has a host and a port from 1 to 65535, and is its
// own canonical form (the hooks and the dialer see one spelling).
func FuzzConnectAuthority(f *testing.F) {
	for _, s := range []string{"example.com:443", "EXAMPLE.com.:443", "[::1]:8443", "[0:0::1]:1", "127.0.0.1:0", "a@b:1", "host", "bücher.example:443", "2130706433:443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authority string) {
		r := &http.Request{Method: http.MethodConnect, URL: &url.URL{Host: authority}, Host: authority, RequestURI: authority, ProtoMajor: 1, ProtoMinor: 1}
		c, err := canonicalConnect(r)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(c.URL.Host)
		if err != nil || host == "" {
			t.Fatalf("%q: canonical %q is not host:port", authority, c.URL.Host)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			t.Fatalf("%q: canonical port %q", authority, port)
		}
		if c.Host != c.URL.Host || c.RequestURI != c.URL.Host {
			t.Fatalf("%q: Host %q, RequestURI %q, URL.Host %q differ", authority, c.Host, c.RequestURI, c.URL.Host)
		}
		again, err := canonicalConnect(c)
		if err != nil || again.URL.Host != c.URL.Host {
			t.Fatalf("%q: canonical %q is not a fixed point: %q, %v", authority, c.URL.Host, again.URL.Host, err)
		}
	})
}
