package sluice

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// tunnelDirector opens tunnels to the CONNECT authority, as package
// forward's Director does (without its policies).
var tunnelDirector = DirectorFunc(func(pr *ProxyRequest) error {
	if pr.In.Method != http.MethodConnect {
		return ErrNoRoute
	}
	pr.Out.URL.Scheme, pr.Out.URL.Host = "tcp", pr.In.URL.Host
	return nil
})

// tunnelFront serves p for a test, closed when it ends.
func tunnelFront(t *testing.T, p *Proxy) *httptest.Server {
	t.Helper()
	f := newFront(t, p)
	t.Cleanup(f.Close)
	return f
}

// tcpUpstream is a TCP server whose connections are served by serve; it
// counts the connections it accepted.
type tcpUpstream struct {
	*rawServer
	accepted atomic.Int32
}

func newTCPUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *tcpUpstream {
	u := &tcpUpstream{}
	u.rawServer = newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		u.accepted.Add(1)
		serve(c, br)
	})
	return u
}

// echoUntilEOF echoes what it reads; on EOF it writes "bye" and closes,
// so that a test sees both half-closes go through.
func echoUntilEOF(c net.Conn, br *bufio.Reader) {
	_, _ = io.Copy(c, br)
	_, _ = io.WriteString(c, "bye")
}

// connectTo sends a CONNECT for authority through the proxy at front,
// followed in the same write by extra, and returns the connection, a
// reader positioned after the response head, and the response.
func connectTo(t *testing.T, front, authority, extra string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n"+extra); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	return c, br, res
}

func TestConnectTunnelKeepsEveryByteAndHalfCloses(t *testing.T) {
	leaktest.Check(t)
	up := newTCPUpstream(t, echoUntilEOF)
	p := &Proxy{Director: tunnelDirector, Via: "sluice"}
	front := tunnelFront(t, p)

	// The bytes right behind the CONNECT head, in the same write, are the
	// tunnel's first bytes.
	c, br, res := connectTo(t, hostOf(front), up.addr, "early bytes|")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	if res.ContentLength > 0 || res.Header.Get("Content-Length") != "" || len(res.TransferEncoding) > 0 {
		t.Errorf("200 to CONNECT has framing headers: %v", res.Header)
	}
	if got := res.Header.Get("Via"); got != "1.1 sluice" {
		t.Errorf("Via = %q, want %q", got, "1.1 sluice")
	}
	if _, err := io.WriteString(c, "later bytes"); err != nil {
		t.Fatal(err)
	}
	want := "early bytes|later bytes"
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != want {
		t.Fatalf("echo = %q, %v; want %q", buf, err, want)
	}
	// Half-close from the client: the upstream sees EOF, answers and
	// closes; the client reads the answer, then EOF.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after half-close: %q, %v; want \"bye\" then EOF", rest, err)
	}
}

func TestConnectRefusals(t *testing.T) {
	up := newTCPUpstream(t, echoUntilEOF)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name     string
		director Director
		check    func(netip.AddrPort) error
		request  string
		want     int
	}{
		{"reverse proxy director", &SingleHost{Target: mustURL(t, "http://"+up.addr)}, nil,
			"CONNECT " + up.addr + " HTTP/1.1\r\nHost: " + up.addr + "\r\n\r\n", http.StatusMethodNotAllowed},
		{"no port", tunnelDirector, nil, "CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", http.StatusBadRequest},
		{"port 0", tunnelDirector, nil, "CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: 127.0.0.1:0\r\n\r\n", http.StatusBadRequest},
		{"port too big", tunnelDirector, nil, "CONNECT 127.0.0.1:70000 HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest},
		{"origin form", tunnelDirector, nil, "CONNECT /x HTTP/1.1\r\nHost: " + up.addr + "\r\n\r\n", http.StatusBadRequest},
		{"userinfo", tunnelDirector, nil, "CONNECT a@" + up.addr + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest},
		{"numeric host", tunnelDirector, nil, "CONNECT 2130706433:443 HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest},
		{"body", tunnelDirector, nil, "CONNECT " + up.addr + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", http.StatusBadRequest},
		{"unreachable", tunnelDirector, nil, "CONNECT " + closedAddr + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadGateway},
		{"dial check", tunnelDirector, func(netip.AddrPort) error { return errors.New("not there") },
			"CONNECT " + up.addr + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusForbidden},
		{"dial check status", tunnelDirector, func(netip.AddrPort) error { return Errorf(http.StatusTeapot, "tea") },
			"CONNECT " + up.addr + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusTeapot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.accepted.Load()
			d := tt.director
			if tt.check != nil {
				d = DirectorFunc(func(pr *ProxyRequest) error {
					pr.DialCheck = tt.check
					return tunnelDirector(pr)
				})
			}
			front := tunnelFront(t, &Proxy{Director: d, Logger: discardLogger()})
			got := rawExchange(t, hostOf(front), tt.request)
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
			if err != nil {
				t.Fatalf("response %q: %v", got, err)
			}
			if res.StatusCode != tt.want {
				t.Errorf("status %d, want %d (%q)", res.StatusCode, tt.want, got)
			}
			if n := up.accepted.Load() - before; n != 0 {
				t.Errorf("the target got %d connections from a refused CONNECT", n)
			}
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// The hooks decide on the canonical authority: routes match its host
// (any port), Authorizers and the Director see one spelling.
func TestConnectHooksSeeCanonicalAuthority(t *testing.T) {
	up := newTCPUpstream(t, echoUntilEOF)
	_, port, _ := net.SplitHostPort(up.addr)
	var seen []string
	var mu sync.Mutex
	p := &Proxy{
		Logger: discardLogger(),
		Authorizer: AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
			mu.Lock()
			seen = append(seen, pr.In.Method+" "+pr.In.RequestURI+" "+pr.In.Host+" "+pr.In.URL.Host)
			mu.Unlock()
			return Allow, nil
		}),
		Director: DirectorFunc(func(pr *ProxyRequest) error {
			// Every name goes to the test's listener.
			pr.Out.URL.Scheme, pr.Out.URL.Host = "tcp", up.addr
			return nil
		}),
	}
	p.AddRoute(Route{Pattern: "CONNECT blocked.example/", Authorizer: AuthorizerFunc(func(*ProxyRequest) (Decision, error) {
		return Deny(http.StatusForbidden, "blocked\n"), nil
	})})
	front := tunnelFront(t, p)

	for _, tt := range []struct {
		authority string
		want      int
		seen      string
	}{
		{"Blocked.Example.:" + port, http.StatusForbidden, "CONNECT blocked.example:" + port},
		{"sub.blocked.example:443", http.StatusOK, "CONNECT sub.blocked.example:443"},
		{"EXAMPLE.com.:443", http.StatusOK, "CONNECT example.com:443"},
		{"[0:0::1]:443", http.StatusOK, "CONNECT [::1]:443"},
	} {
		mu.Lock()
		seen = nil
		mu.Unlock()
		c, _, res := connectTo(t, hostOf(front), tt.authority, "")
		c.Close()
		if res.StatusCode != tt.want {
			t.Errorf("CONNECT %s: status %d, want %d", tt.authority, res.StatusCode, tt.want)
		}
		mu.Lock()
		got := seen
		mu.Unlock()
		canon := strings.TrimPrefix(tt.seen, "CONNECT ")
		if want := tt.seen + " " + canon + " " + canon; len(got) != 1 || got[0] != want {
			t.Errorf("CONNECT %s: Authorizer saw %q, want [%q]", tt.authority, got, want)
		}
	}
}

func TestConnectShutdownEndsTunnels(t *testing.T) {
	leaktest.Check(t)
	up := newTCPUpstream(t, echoUntilEOF)
	p := &Proxy{Director: tunnelDirector}
	front := tunnelFront(t, p)
	c, br, res := connectTo(t, hostOf(front), up.addr, "")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("tunnel after Shutdown: %v, want EOF", err)
	}
	c.Close()
	// New tunnels are refused.
	_, _, res = connectTo(t, hostOf(front), up.addr, "")
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("CONNECT after Shutdown: %d, want 503", res.StatusCode)
	}
}

func TestConnectIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	up := newTCPUpstream(t, echoUntilEOF)
	p := &Proxy{Director: tunnelDirector, WebSocket: &WebSocketConfig{IdleTimeout: 150 * time.Millisecond}}
	front := tunnelFront(t, p)
	c, br, _ := connectTo(t, hostOf(front), up.addr, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("idle tunnel: %v, want EOF", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("tunnel ended after %v, before its idle timeout", d)
	}
	c.Close()
}

// A ClientHello check sees the SNI before any byte reaches the target;
// once it allows, every byte goes through and TLS works end to end.
func TestConnectClientHello(t *testing.T) {
	leaktest.Check(t)
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello over "+r.Proto)
	}))
	defer tlsUp.Close()
	addr := strings.TrimPrefix(tlsUp.URL, "https://")
	var got atomic.Value
	p := &Proxy{Logger: discardLogger(), Director: DirectorFunc(func(pr *ProxyRequest) error {
		pr.ClientHello = func(h *tls.ClientHelloInfo) error {
			if h == nil {
				got.Store("<nil>")
				return errors.New("not TLS")
			}
			got.Store(h.ServerName)
			if h.ServerName != "example.com" {
				return errors.New("wrong name")
			}
			return nil
		}
		return tunnelDirector(pr)
	})}
	front := tunnelFront(t, p)

	for _, tt := range []struct {
		sni    string
		wantOK bool
	}{{"example.com", true}, {"other.example", false}} {
		tr := &http.Transport{
			Proxy:           http.ProxyURL(mustURL(t, front.URL)),
			TLSClientConfig: &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true},
		}
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
		if got.Load() != tt.sni {
			t.Errorf("SNI %s: check saw %v", tt.sni, got.Load())
		}
		if tt.wantOK {
			if err != nil {
				t.Fatalf("SNI %s: %v", tt.sni, err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != "hello over HTTP/1.1" && string(b) != "hello over HTTP/2.0" {
				t.Errorf("body %q", b)
			}
		} else if err == nil {
			res.Body.Close()
			t.Errorf("SNI %s: request went through a refused tunnel", tt.sni)
		}
		tr.CloseIdleConnections()
	}

	// Not TLS at all: the check gets nil, the target gets nothing.
	up := newTCPUpstream(t, echoUntilEOF)
	c, br, res := connectTo(t, hostOf(front), up.addr, "GET / HTTP/1.1\r\n\r\n")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if b, _ := io.ReadAll(br); len(b) != 0 {
		t.Errorf("refused tunnel carried %q", b)
	}
	c.Close()
	if got.Load() != "<nil>" {
		t.Errorf("check saw %v for a plain-text tunnel, want nil", got.Load())
	}
}

func TestConnectOverHTTP2Refused(t *testing.T) {
	r := httptest.NewRequest(http.MethodConnect, "/", nil)
	r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
	if err := checkRequest(r); StatusFor(err) != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT over HTTP/2: %v (%d), want 405", err, StatusFor(err))
	}
}
