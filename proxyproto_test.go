package sluice

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
)

// The PROXY protocol in front of Server (Server.ProxyProtocol): the
// header's source is the client address for the handler and the Proxy.

var loopbackPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}

// ppV1 is a version 1 header for a TCP connection from src to dst.
func ppV1(src, dst string) string {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	proto := "TCP4"
	if s.Addr().Is6() {
		proto = "TCP6"
	}
	return fmt.Sprintf("PROXY %s %s %s %d %d\r\n", proto, s.Addr(), d.Addr(), s.Port(), d.Port())
}

// ppV2 is a version 2 PROXY header for a TCP connection from src to dst.
func ppV2(src, dst string) string {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	fam := byte(0x11)
	var block []byte
	if s.Addr().Is6() {
		fam = 0x21
		a, b := s.Addr().As16(), d.Addr().As16()
		block = append(a[:], b[:]...)
	} else {
		a, b := s.Addr().As4(), d.Addr().As4()
		block = append(a[:], b[:]...)
	}
	block = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(block, s.Port()), d.Port())
	return "\r\n\r\n\x00\r\nQUIT\n" + string([]byte{0x21, fam, 0, byte(len(block))}) + string(block)
}

// ppV2Local is a version 2 LOCAL header, a load balancer's health check.
const ppV2Local = "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"

// ppServer serves h with a Server configured by configure on a loopback
// listener (TLS with its TLSConfig when tlsOn) and returns its address.
func ppServer(t *testing.T, h http.Handler, tlsOn bool, configure func(*Server)) (*Server, string) {
	t.Helper()
	srv := &Server{Handler: h, Logger: discardLogger(), ProxyProtocol: loopbackPeers}
	if configure != nil {
		configure(srv)
	}
	return srv, startServer(t, srv, tlsOn).Addr().String()
}

// exchange writes the pieces to a new connection to addr, a few ms apart
// (a slow sender), and returns what comes back until the server closes
// the connection (a reset, for a server that closes without reading
// everything, counts as a close).
func exchange(t *testing.T, addr string, pieces ...string) string {
	t.Helper()
	return exchangeConn(t, addr, false, pieces...)
}

// exchangeConn is exchange, with the client's side half-closed after the
// pieces when halfClose is set.
func exchangeConn(t *testing.T, addr string, halfClose bool, pieces ...string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i, p := range pieces {
		if i > 0 {
			time.Sleep(5 * time.Millisecond) // a slow sender, not synchronization
		}
		if _, err := io.WriteString(c, p); err != nil && !isConnReset(err) {
			t.Fatal(err)
		}
	}
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err != nil && !isConnReset(err) {
		t.Errorf("reading the answer: %v", err)
	}
	return string(b)
}

// statusLine returns the first line of a raw answer, "" for none.
func statusLine(answer string) string {
	line, _, _ := strings.Cut(answer, "\r\n")
	return line
}

const getClose = "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"

// A Proxy behind a Server with a PROXY peer: the upstream's
// X-Forwarded-For, AllowFrom and TrustedProxies go by the header's source.
func TestProxyProtocolClientAddress(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	var seen []string
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Forwarded-For"))
		mu.Unlock()
	})
	p := proxyTo(t, upstream.URL)
	p.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	p.Authorizer = AllowFrom(netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("127.0.0.0/8"))
	_, addr := ppServer(t, p, false, nil)

	for _, tt := range []struct {
		name, header, req string
		status, xff       string // xff "": the upstream is not reached
	}{
		{"v1 TCP4 allowed", ppV1("203.0.113.7:40000", "192.0.2.1:80"), getClose, "HTTP/1.1 200 OK", "203.0.113.7"},
		{"v2 TCP4 allowed", ppV2("203.0.113.8:40000", "192.0.2.1:80"), getClose, "HTTP/1.1 200 OK", "203.0.113.8"},
		{"v1 TCP6 allowed", ppV1("[2001:db8::9]:40000", "[2001:db8::1]:80"), getClose, "HTTP/1.1 200 OK", "2001:db8::9"},
		{"v2 TCP6 allowed", ppV2("[2001:db8::a]:40000", "[2001:db8::1]:80"), getClose, "HTTP/1.1 200 OK", "2001:db8::a"},
		// AllowFrom goes by the header, not by the TCP peer (127.0.0.1,
		// which it allows).
		{"v1 denied", ppV1("198.51.100.1:40000", "192.0.2.1:80"), getClose, "HTTP/1.1 403 Forbidden", ""},
		{"v2 denied", ppV2("198.51.100.2:40000", "192.0.2.1:80"), getClose, "HTTP/1.1 403 Forbidden", ""},
		// A header's source in TrustedProxies (an L7 proxy behind the L4
		// balancer): its X-Forwarded-For is believed and extended.
		{"v2 from a trusted proxy", ppV2("10.1.2.3:40000", "192.0.2.1:80"),
			"GET /x HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
			"HTTP/1.1 200 OK", "203.0.113.9, 10.1.2.3"},
		// The same X-Forwarded-For from a source not trusted: replaced.
		{"v1 forged X-Forwarded-For", ppV1("203.0.113.10:40000", "192.0.2.1:80"),
			"GET /x HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n",
			"HTTP/1.1 200 OK", "203.0.113.10"},
		// Health checks keep the real peer.
		{"v2 LOCAL", ppV2Local, getClose, "HTTP/1.1 200 OK", "127.0.0.1"},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", getClose, "HTTP/1.1 200 OK", "127.0.0.1"},
	} {
		mu.Lock()
		seen = nil
		mu.Unlock()
		// The header and the request in one write.
		if got := statusLine(exchange(t, addr, tt.header+tt.req)); got != tt.status {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.status)
		}
		mu.Lock()
		var want []string
		if tt.xff != "" {
			want = []string{tt.xff}
		}
		if diff := cmp.Diff(want, seen); diff != "" {
			t.Errorf("%s: X-Forwarded-For at the upstream (-want +got):\n%s", tt.name, diff)
		}
		mu.Unlock()
	}
}

// The header in pieces, the header and two requests in one write: every
// request is answered with the header's address, and no byte after the
// header is lost.
func TestProxyProtocolFraming(t *testing.T) {
	leaktest.Check(t)
	_, addr := ppServer(t, echoAddrs(), false, nil)
	v1, v2 := ppV1("203.0.113.7:40001", "192.0.2.1:8080"), ppV2("203.0.113.8:40002", "192.0.2.2:8443")
	twoRequests := "GET /a HTTP/1.1\r\nHost: a\r\n\r\n" + getClose
	for _, tt := range []struct {
		name   string
		pieces []string
		want   []string // the bodies, in order
	}{
		{"v1 in three writes", []string{v1[:3], v1[3:20], v1[20:], getClose},
			[]string{"203.0.113.7:40001 192.0.2.1:8080 HTTP/1.1"}},
		{"v2 in three writes, cut in the signature and in the addresses", []string{v2[:5], v2[5:20], v2[20:], getClose},
			[]string{"203.0.113.8:40002 192.0.2.2:8443 HTTP/1.1"}},
		{"v1 CR and LF apart", []string{v1[:len(v1)-1], v1[len(v1)-1:] + getClose},
			[]string{"203.0.113.7:40001 192.0.2.1:8080 HTTP/1.1"}},
		{"v1 and two pipelined requests in one write", []string{v1 + twoRequests},
			[]string{"203.0.113.7:40001 192.0.2.1:8080 HTTP/1.1", "203.0.113.7:40001 192.0.2.1:8080 HTTP/1.1"}},
		{"v2 and two pipelined requests in one write", []string{v2 + twoRequests},
			[]string{"203.0.113.8:40002 192.0.2.2:8443 HTTP/1.1", "203.0.113.8:40002 192.0.2.2:8443 HTTP/1.1"}},
	} {
		if diff := cmp.Diff(tt.want, bodies(t, exchange(t, addr, tt.pieces...))); diff != "" {
			t.Errorf("%s: answers (-want +got):\n%s", tt.name, diff)
		}
	}
}

// echoAddrs answers with the request's RemoteAddr, local address and
// protocol.
func echoAddrs() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "%s %v %s", r.RemoteAddr, la, r.Proto)
	})
}

// bodies reads the HTTP/1.1 responses in a raw answer and returns their
// bodies.
func bodies(t *testing.T, answer string) []string {
	t.Helper()
	var out []string
	br := bufio.NewReader(strings.NewReader(answer))
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("reading responses: %v in %q", err, answer)
			return out
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		out = append(out, string(b))
	}
}

// ppDialer dials addr and sends header first, as a load balancer does.
func ppDialer(header string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(c, header); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// HTTP/2 over TLS, HTTP/1.1 over TLS, h2c and HTTP/1.1 all see the
// header's addresses; over TLS the header comes before the handshake.
func TestProxyProtocolProtocols(t *testing.T) {
	leaktest.Check(t)
	pki := newTestPKI(t)
	cert := pki.issue(t, "server", false)
	_, tlsAddr := ppServer(t, echoAddrs(), true, func(s *Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	_, plainAddr := ppServer(t, echoAddrs(), false, func(s *Server) { s.Protocols = protocols(true, false, true) })
	_, h2cOnly := ppServer(t, echoAddrs(), false, func(s *Server) { s.Protocols = protocols(false, false, true) })

	for _, version := range []string{"v1", "v2"} {
		header := ppV1("203.0.113.7:40001", "192.0.2.1:443")
		if version == "v2" {
			header = ppV2("[2001:db8::7]:40001", "[2001:db8::1]:443")
		}
		want := "203.0.113.7:40001 192.0.2.1:443 "
		if version == "v2" {
			want = "[2001:db8::7]:40001 [2001:db8::1]:443 "
		}
		for _, tt := range []struct {
			name, url, proto string
			tr               *http.Transport
		}{
			{"h2 over TLS", "https://" + tlsAddr, "HTTP/2.0", &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}, Protocols: protocols(false, true, false)}},
			{"h1 over TLS", "https://" + tlsAddr, "HTTP/1.1", &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}},
			{"h2c", "http://" + plainAddr, "HTTP/2.0", &http.Transport{Protocols: protocols(false, false, true)}},
			{"h2c only", "http://" + h2cOnly, "HTTP/2.0", &http.Transport{Protocols: protocols(false, false, true)}},
			{"h1", "http://" + plainAddr, "HTTP/1.1", &http.Transport{}},
		} {
			tt.tr.DialContext = ppDialer(header)
			t.Cleanup(tt.tr.CloseIdleConnections)
			c := &http.Client{Transport: tt.tr, Timeout: 10 * time.Second}
			// Two requests: the second on the same connection.
			for i := range 2 {
				res, err := c.Get(tt.url + "/x")
				if err != nil {
					t.Errorf("%s %s: %v", version, tt.name, err)
					break
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if got := string(b); got != want+tt.proto {
					t.Errorf("%s %s, request %d: %q, want %q", version, tt.name, i, got, want+tt.proto)
				}
			}
		}
	}
}

// A peer not listed sends a PROXY line: it is a malformed request (400),
// and its real address is the one used. A listed peer that sends no
// header, or a malformed one, is closed without an answer.
func TestProxyProtocolRefused(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	var seen []string
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Forwarded-For"))
		mu.Unlock()
	})
	logs := &logRecorder{}
	_, untrusted := ppServer(t, proxyTo(t, upstream.URL), false, func(s *Server) {
		s.ProxyProtocol = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	_, trusted := ppServer(t, proxyTo(t, upstream.URL), false, func(s *Server) { s.Logger = logs.logger() })

	for _, header := range []string{ppV1("203.0.113.7:1", "192.0.2.1:80"), ppV2("203.0.113.7:1", "192.0.2.1:80")} {
		if got := statusLine(exchange(t, untrusted, header+getClose)); got != "HTTP/1.1 400 Bad Request" {
			t.Errorf("PROXY header %q from a peer not listed: %q, want 400", header, got)
		}
	}
	if got := statusLine(exchange(t, untrusted, getClose)); got != "HTTP/1.1 200 OK" {
		t.Errorf("a request from a peer not listed: %q, want 200", got)
	}

	for _, tt := range []struct {
		name, in  string
		halfClose bool
	}{
		{"no header", getClose, false},
		{"TLS instead of a header", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 40), false},
		{"malformed v1", "PROXY TCP4 203.0.113.007 192.0.2.1 1 80\r\n" + getClose, false},
		{"lone LF", "PROXY TCP4 203.0.113.7 192.0.2.1 1 80\n" + getClose, false},
		{"v2 UDP", "\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c" + "\xcb\x00\x71\x07\xc0\x00\x02\x01\x00\x35\x00\x35" + getClose, false},
		{"closed within the header", "PROXY TCP4 203.0.113.7 1", true},
	} {
		if got := exchangeConn(t, trusted, tt.halfClose, tt.in); got != "" {
			t.Errorf("%s: %q, want the connection closed without an answer", tt.name, got)
		}
	}
	mu.Lock()
	if diff := cmp.Diff([]string{"127.0.0.1"}, seen); diff != "" {
		t.Errorf("X-Forwarded-For at the upstream (-want +got):\n%s", diff)
	}
	mu.Unlock()
	if n := strings.Count(logs.String(), "PROXY protocol header refused"); n != 6 {
		t.Errorf("%d debug lines for refused headers, want 6:\n%s", n, logs)
	}
}

// A listed peer that sends nothing, or half a header, is cut after
// ReadHeaderTimeout, on a plain and on a TLS listener.
func TestProxyProtocolTimeout(t *testing.T) {
	leaktest.Check(t)
	cert := newTestPKI(t).issue(t, "server", false)
	for _, tlsOn := range []bool{false, true} {
		_, addr := ppServer(t, http.NotFoundHandler(), tlsOn, func(s *Server) {
			s.ReadHeaderTimeout = 300 * time.Millisecond
			s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		})
		for _, sent := range []string{"", "PROXY TCP4 1.2", ppV2("203.0.113.7:1", "192.0.2.1:80")[:20]} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, sent)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			begin := time.Now()
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("TLS %v, sent %q: read %d bytes", tlsOn, sent, n)
			}
			if d := time.Since(begin); d < 250*time.Millisecond || d > 5*time.Second {
				t.Errorf("TLS %v, sent %q: closed after %v, want about 300ms", tlsOn, sent, d)
			}
			c.Close()
		}
	}
}

// Shutdown and Close with a listed peer that sent nothing, or half a
// header, return at once and leave no goroutine behind.
func TestProxyProtocolShutdownPending(t *testing.T) {
	cert := newTestPKI(t).issue(t, "server", false)
	for _, tt := range []struct {
		name  string
		tlsOn bool
		sent  string
		close bool
	}{
		{"Shutdown, nothing sent", false, "", false},
		{"Shutdown, half a header", false, "PROXY TCP4 1.2", false},
		{"Shutdown, TLS, half a header", true, "\r\n\r\n\x00\r\n", false},
		{"Shutdown, TLS, header sent, no handshake", true, ppV2("203.0.113.7:1", "192.0.2.1:80"), false},
		{"Close, nothing sent", false, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			srv, addr := ppServer(t, http.NotFoundHandler(), tt.tlsOn, func(s *Server) {
				s.ReadHeaderTimeout = time.Minute // far beyond the test
				s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
			})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tt.sent)
			// Wait until the connection is the front's.
			for end := time.Now().Add(5 * time.Second); pendingConns(srv) == 0; {
				if time.Now().After(end) {
					t.Fatal("the connection never became pending")
				}
				time.Sleep(time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			begin := time.Now()
			if tt.close {
				err = srv.Close()
			} else {
				err = srv.Shutdown(ctx)
			}
			if err != nil || time.Since(begin) > 2*time.Second {
				t.Errorf("returned %v after %v", err, time.Since(begin))
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isConnReset(err) {
				t.Errorf("the pending connection: read %d bytes, %v; want it closed", n, err)
			}
		})
	}
}

func pendingConns(s *Server) int {
	s.front.mu.Lock()
	defer s.front.mu.Unlock()
	return len(s.front.pending)
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// curl --haproxy-protocol (version 1) over HTTP/1.1, h2c, and TLS with
// both ALPN protocols; to a server that does not list it, the header is a
// malformed request.
func TestProxyProtocolCurl(t *testing.T) {
	leaktest.Check(t)
	curl := realserver.LookPath(t, "curl", "apt-get install curl")
	pki := newTestPKI(t)
	cert := pki.issue(t, "server", false)
	_, tlsAddr := ppServer(t, echoAddrs(), true, func(s *Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	_, plainAddr := ppServer(t, echoAddrs(), false, func(s *Server) { s.Protocols = protocols(true, false, true) })
	_, notListed := ppServer(t, echoAddrs(), false, func(s *Server) { s.ProxyProtocol = nil })
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url, proto string
		args             []string
	}{
		{"h1", "http://" + plainAddr, "HTTP/1.1", []string{"--http1.1"}},
		{"h2c", "http://" + plainAddr, "HTTP/2.0", []string{"--http2-prior-knowledge"}},
		{"h1 over TLS", "https://" + tlsAddr, "HTTP/1.1", []string{"--http1.1", "--cacert", ca}},
		{"h2 over TLS", "https://" + tlsAddr, "HTTP/2.0", []string{"--http2", "--cacert", ca}},
		{"not listed", "http://" + notListed, "400", []string{"--http1.1"}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		args := append([]string{"-sS", "--haproxy-protocol", "-w", " %{local_ip}:%{local_port} %{http_code}"}, tt.args...)
		out, err := exec.CommandContext(ctx, curl, append(args, tt.url+"/x")...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: %v: %s", tt.name, err, out)
			continue
		}
		// The handler's answer, then curl's own address and the status.
		f := strings.Fields(string(out))
		if tt.proto == "400" {
			if len(f) == 0 || f[len(f)-1] != "400" {
				t.Errorf("%s: %q, want 400", tt.name, out)
			}
			continue
		}
		if len(f) != 5 || f[0] != f[3] || f[2] != tt.proto || f[4] != "200" {
			t.Errorf("%s: %q, want the handler to see curl's address %s, protocol %s", tt.name, out, f[len(f)-2], tt.proto)
		}
	}
}

// HAProxy in front of a Server, in TCP mode with send-proxy (v1) and
// send-proxy-v2: the handler sees the client's own address and port
// (not HAProxy's connection to the Server), and the upstream's
// X-Forwarded-For names the client. The client reaches HAProxy over IPv6
// (::1) where the machine has it, and HAProxy the Server over IPv4
// (127.0.0.1), so that the addresses differ too.
func TestProxyProtocolHAProxy(t *testing.T) {
	leaktest.Check(t)
	haproxy := "/usr/sbin/haproxy"
	if _, err := os.Stat(haproxy); err != nil {
		haproxy = realserver.LookPath(t, "haproxy", "apt-get install haproxy")
	}
	var mu sync.Mutex
	var seen []string
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Forwarded-For"))
		mu.Unlock()
	})
	var remotes sync.Map // RemoteAddr seen by the Server's handler, by path
	p := proxyTo(t, upstream.URL)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remotes.Store(r.URL.Path, r.RemoteAddr)
		p.ServeHTTP(w, r)
	})
	_, addr := ppServer(t, h, false, func(s *Server) {
		s.ProxyProtocol = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})

	host, clientIP := "[::1]", "::1"
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		host, clientIP = "127.0.0.1", "127.0.0.1"
	} else {
		ln.Close()
	}
	v1Port, v2Port := freeLoopbackPort(t, host), freeLoopbackPort(t, host)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global
	maxconn 100
defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend v1
	bind %s:%d
	default_backend v1
backend v1
	server sluice %s send-proxy
frontend v2
	bind %s:%d
	default_backend v2
backend v2
	server sluice %s send-proxy-v2
`, host, v1Port, addr, host, v2Port, addr)
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(haproxy, "-db", "-f", cfgFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	var clientAddrs sync.Map // the client's own addresses, by path
	for _, tt := range []struct {
		name string
		port int
	}{{"send-proxy", v1Port}, {"send-proxy-v2", v2Port}} {
		url := fmt.Sprintf("http://%s:%d/%s", host, tt.port, tt.name)
		tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := new(net.Dialer).DialContext(ctx, network, addr)
			if err == nil {
				clientAddrs.Store("/"+tt.name, c.LocalAddr().String())
			}
			return c, err
		}}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var res *http.Response
		var err error
		// HAProxy may still be starting: its listener refuses until then.
		for end := time.Now().Add(10 * time.Second); ; {
			if res, err = c.Get(url); err == nil || time.Now().After(end) {
				break
			}
			select {
			case <-exited:
				t.Fatalf("haproxy exited:\n%s", out.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err != nil {
			t.Fatalf("%s: %v\nhaproxy:\n%s", tt.name, err, out.String())
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("%s: %s", tt.name, res.Status)
		}
		got, _ := remotes.Load("/" + tt.name)
		want, _ := clientAddrs.Load("/" + tt.name)
		if got != want {
			t.Errorf("%s: the handler saw RemoteAddr %v, want the client's %v", tt.name, got, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{clientIP, clientIP}, seen); diff != "" {
		t.Errorf("X-Forwarded-For at the upstream (-want +got):\n%s", diff)
	}
}

// freeLoopbackPort returns a port free on host ("[::1]" or "127.0.0.1").
func freeLoopbackPort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A TLS listener that does not come from TLSListener hides the raw
// connection: a listed peer's connection is closed, with a warning.
func TestProxyProtocolForeignTLSListener(t *testing.T) {
	leaktest.Check(t)
	cert := newTestPKI(t).issue(t, "server", false)
	logs := &logRecorder{}
	srv := &Server{Handler: echoAddrs(), Logger: logs.logger(), ProxyProtocol: loopbackPeers}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	if got := exchange(t, ln.Addr().String(), ppV2("203.0.113.7:1", "192.0.2.1:443")+"\x16\x03\x01"); got != "" {
		t.Errorf("answered %q, want the connection closed", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "TLSListener") {
		t.Errorf("logged %q, want a warning naming TLSListener", logs)
	}
}

// Bodies move both ways through a connection whose addresses a header
// gave (the wrapper keeps *net.TCPConn's ReadFrom, so splice(2), and its
// descriptor for the idle wait).
func TestProxyProtocolLargeBodies(t *testing.T) {
	leaktest.Check(t)
	const size = 4 << 20
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Header().Set("X-Got", fmt.Sprint(n))
		w.Write(bytes.Repeat([]byte("d"), size))
	})
	_, addr := ppServer(t, proxyTo(t, upstream.URL), false, nil)
	tr := &http.Transport{DialContext: ppDialer(ppV1("203.0.113.7:40000", "192.0.2.1:80"))}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for i := range 3 { // on one connection
		res, err := c.Post("http://"+addr+"/up", "application/octet-stream", bytes.NewReader(bytes.Repeat([]byte("u"), size/4)))
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || n != size || res.Header.Get("X-Got") != fmt.Sprint(size/4) {
			t.Errorf("exchange %d: got %d bytes (%v), the upstream %s; want %d and %d", i, n, err, res.Header.Get("X-Got"), size, size/4)
		}
	}
}
