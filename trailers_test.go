package sluice

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// trailerSeen is what an upstream learnt of a request's trailers: the
// names announced in its Trailer header and the fields of its trailer
// section.
type trailerSeen struct {
	Declared []string
	Trailer  http.Header
	Header   http.Header
}

// TestRequestTrailersFiltered: a client's request trailers pass to the
// upstream, except the fields RFC 9110 §6.5.1 rules out of a trailer
// section and the fields the proxy owns (identity, forwarding), in any
// spelling, whether the client announced them in Trailer or not.
func TestRequestTrailersFiltered(t *testing.T) {
	leaktest.Check(t)
	for _, transport := range []string{"engine", "net/http"} {
		t.Run(transport, func(t *testing.T) {
			got := make(chan trailerSeen, 1)
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				var s trailerSeen
				for k := range r.Trailer {
					s.Declared = append(s.Declared, k)
				}
				slices.Sort(s.Declared)
				if _, err := io.Copy(io.Discard, r.Body); err != nil {
					t.Errorf("upstream reading body: %v", err)
				}
				s.Trailer, s.Header = r.Trailer.Clone(), r.Header.Clone()
				got <- s
				io.WriteString(w, "ok")
			})
			px, _, _ := newProxy(t, up.URL, func(p *Proxy) {
				p.IdentityHeaders = []string{"X-Sluice-User", "X-Auth-*"}
				if transport == "net/http" {
					tr := &http.Transport{}
					t.Cleanup(tr.CloseIdleConnections)
					p.Transport = tr
				}
			})
			resp := rawExchange(t, hostOf(px), "POST /t HTTP/1.1\r\nHost: x\r\n"+
				"Transfer-Encoding: chunked\r\nConnection: close, X-Hop\r\nTE: trailers\r\n"+
				"Trailer: X-Checksum, Grpc-Status, X-Sluice-User, X_Sluice_User, X-Auth-Role, Authorization,"+
				" Cookie, Host, Set-Cookie, Content-Type, X-Forwarded-For, Via, Forwarded, X-Real-Ip, X-Hop\r\n\r\n"+
				"5\r\nhello\r\n0\r\n"+
				"X-Checksum: abc\r\n"+
				"Grpc-Status: 0\r\n"+
				"Server-Timing: db;dur=53\r\n"+
				"X-Undeclared-Ok: fine\r\n"+
				"X-Sluice-User: admin\r\n"+
				"X_Sluice_User: admin\r\n"+
				"x_sluice_USER: admin\r\n"+
				"X-Auth-Role: root\r\n"+
				"X_Auth_Role: root\r\n"+
				"X-Forwarded-For: 1.2.3.4\r\n"+
				"X_Forwarded_For: 1.2.3.4\r\n"+
				"X-Forwarded-Host: evil\r\n"+
				"X-Real-Ip: 1.2.3.4\r\n"+
				"Forwarded: for=1.2.3.4\r\n"+
				"Via: 1.1 evil\r\n"+
				"Authorization: Bearer stolen\r\n"+
				"Proxy-Authorization: Basic eDp5\r\n"+
				"Cookie: sid=evil\r\n"+
				"Set-Cookie: sid=evil\r\n"+
				"Host: evil\r\n"+
				"Content-Length: 999\r\n"+
				"Transfer-Encoding: gzip\r\n"+
				"Trailer: X-More\r\n"+
				"Content-Type: text/evil\r\n"+
				"Content-Encoding: gzip\r\n"+
				"Content-Range: bytes 0-1/2\r\n"+
				"Cache-Control: no-cache\r\n"+
				"Pragma: no-cache\r\n"+
				"Expect: 100-continue\r\n"+
				"Max-Forwards: 0\r\n"+
				"Range: bytes=0-1\r\n"+
				"If-Match: *\r\n"+
				"Connection: close\r\n"+
				"Keep-Alive: 1\r\n"+
				"Upgrade: websocket\r\n"+
				"X-Hop: named-in-connection\r\n"+
				"\r\n")
			if !strings.HasPrefix(resp, "HTTP/1.1 200 ") {
				t.Fatalf("response %q", resp)
			}
			s := <-got
			want := trailerSeen{
				Declared: []string{"Grpc-Status", "X-Checksum"},
				Trailer: http.Header{
					"X-Checksum":      {"abc"},
					"Grpc-Status":     {"0"},
					"Server-Timing":   {"db;dur=53"},
					"X-Undeclared-Ok": {"fine"},
				},
			}
			if diff := cmp.Diff(want, trailerSeen{Declared: s.Declared, Trailer: s.Trailer}); diff != "" {
				t.Errorf("upstream's trailers (-want +got):\n%s", diff)
			}
			for _, k := range []string{"X-Sluice-User", "X-Auth-Role", "Authorization", "Cookie", "Set-Cookie", "X-Hop"} {
				if v, ok := s.Header[k]; ok {
					t.Errorf("upstream's header has %s: %q", k, v)
				}
			}
			if v := s.Header["X-Forwarded-For"]; len(v) != 1 || strings.Contains(v[0], "1.2.3.4") {
				t.Errorf("upstream's X-Forwarded-For %q", v)
			}
		})
	}
}

// TestRequestTrailersUndeclared: trailers a client sends without a
// Trailer header pass too (filtered), as the response's do.
func TestRequestTrailersUndeclared(t *testing.T) {
	leaktest.Check(t)
	got := make(chan http.Header, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Clone()
	})
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) { p.IdentityHeaders = []string{"X-Sluice-User"} })
	resp := rawExchange(t, hostOf(px), "PUT /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+
		"2\r\nhi\r\n0\r\nX-Checksum: abc\r\nX-Sluice-User: admin\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 200 ") {
		t.Fatalf("response %q", resp)
	}
	if diff := cmp.Diff(http.Header{"X-Checksum": {"abc"}}, <-got); diff != "" {
		t.Errorf("upstream's trailers (-want +got):\n%s", diff)
	}
}

// TestResponseTrailersFiltered: an upstream's trailers reach the client,
// except those RFC 9110 §6.5.1 rules out of a trailer section (an
// upstream cannot set a cookie or a length through one) and the fields
// the proxy owns.
func TestResponseTrailersFiltered(t *testing.T) {
	leaktest.Check(t)
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\n"+
			"Trailer: Grpc-Status, Grpc-Message, Set-Cookie, X-Sluice-User, Www-Authenticate, Content-Type, X-Hop, Location\r\n\r\n"+
			"5\r\nhello\r\n0\r\n"+
			"Grpc-Status: 0\r\n"+
			"Grpc-Message: ok\r\n"+
			"Server-Timing: total;dur=1\r\n"+
			"Digest: sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=\r\n"+
			"Set-Cookie: sid=evil\r\n"+
			"Content-Length: 9999\r\n"+
			"Transfer-Encoding: gzip\r\n"+
			"Trailer: X-More\r\n"+
			"Content-Type: text/evil\r\n"+
			"Content-Encoding: gzip\r\n"+
			"Content-Range: bytes 0-1/2\r\n"+
			"Www-Authenticate: Basic\r\n"+
			"Location: http://evil.example/\r\n"+
			"Cache-Control: public\r\n"+
			"Vary: *\r\n"+
			"Connection: close\r\n"+
			"X-Hop: secret\r\n"+
			"X-Forwarded-For: 1.2.3.4\r\n"+
			"X-Sluice-User: admin\r\n"+
			"X_Sluice_User: admin\r\n"+
			"\r\n")
	})
	px, _, _ := newProxy(t, up.URL(), func(p *Proxy) { p.IdentityHeaders = []string{"X-Sluice-User"} })
	raw := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("reading %q: %v", raw, err)
	}
	var declared []string
	for k := range res.Trailer {
		declared = append(declared, k)
	}
	slices.Sort(declared)
	body, err := io.ReadAll(res.Body)
	if err != nil || string(body) != "hello" {
		t.Fatalf("body %q, %v", body, err)
	}
	want := trailerSeen{
		Declared: []string{"Grpc-Message", "Grpc-Status"},
		Trailer: http.Header{
			"Grpc-Status":   {"0"},
			"Grpc-Message":  {"ok"},
			"Server-Timing": {"total;dur=1"},
			"Digest":        {"sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="},
		},
	}
	if diff := cmp.Diff(want, trailerSeen{Declared: declared, Trailer: res.Trailer}); diff != "" {
		t.Errorf("client's trailers (-want +got):\n%s", diff)
	}
	for _, k := range []string{"Set-Cookie", "Location", "Www-Authenticate", "X-Sluice-User", "X-Hop"} {
		if v, ok := res.Header[k]; ok {
			t.Errorf("client's header has %s: %q", k, v)
		}
	}
}
