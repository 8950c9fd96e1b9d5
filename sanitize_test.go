package sluice

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// A route must catch its requests however the client spells them, since
// the Director and the upstream read them normalized.
func TestRoutesCannotBeBypassedBySpelling(t *testing.T) {
	leaktest.Check(t)
	var hits atomic.Int32
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	u, _ := url.Parse(up.URL)
	px, p, _ := newProxy(t, up.URL, func(p *Proxy) { p.Director = new(PrefixDirector).Add("/", u, PrefixOptions{}) })
	deny := InterceptorFunc(func(w http.ResponseWriter, pr *ProxyRequest) error {
		http.Error(w, "denied", http.StatusForbidden)
		return nil
	})
	p.Handle("admin.example.com/", deny)
	p.Handle("/admin/", deny)
	for _, tc := range []struct{ host, path string }{
		{"admin.example.com", "/x"},
		{"ADMIN.Example.com", "/x"},
		{"admin.example.com.", "/x"},
		{"admin.example.com:8080", "/x"},
		{"a", "/admin/secret"},
		{"a", "/%61dmin/secret"},
		{"a", "//admin/secret"},
		{"a", "/x/../admin/secret"},
	} {
		resp := rawExchange(t, hostOf(px), "GET "+tc.path+" HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 403") {
			t.Errorf("Host %s, path %s: %q, want the route's 403", tc.host, tc.path, firstLine(resp))
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests bypassed their route to the upstream", n)
	}
}

// Client-identity headers a client could forge are dropped: every
// X-Forwarded-* from an untrusted peer, X-Real-Ip, underscore spellings,
// and identity headers in any spelling.
func TestForgedIdentityHeadersDropped(t *testing.T) {
	leaktest.Check(t)
	got := make(chan http.Header, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) { p.IdentityHeaders = []string{"X-User", "X-Sluice-*"} })
	rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real-Ip: 6.6.6.6\r\n"+
		"X-Forwarded-Prefix: /evil\r\nX-Forwarded-Port: 443\r\nX-User: bob\r\nX_User: bob\r\n"+
		"X_Sluice_Email: bob@evil\r\nX-Kept: yes\r\nConnection: close\r\n\r\n")
	h := <-got
	var names []string
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	want := []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Kept"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("headers reaching the upstream (-want +got):\n%s", diff)
	}
	if v := h.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", v)
	}
}

// RFC 9110 §15.2: a server must not send a 1xx response to an HTTP/1.0
// client, which would take it for the final one.
func TestNoInformationalToHTTP10Client(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	px, _, _ := newProxy(t, up.URL)
	resp := rawExchange(t, hostOf(px), "GET / HTTP/1.0\r\nHost: a\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.0 200") {
		t.Errorf("HTTP/1.0 client got %q first, want the final 200", firstLine(resp))
	}
}

// A request with both Content-Length and chunked framing is refused by
// sluice's Server (RFC 9112 §6.3 lets a server reject it). Behind
// net/http's, which drops the length before the handler runs, it is
// forwarded re-framed and its connection closed afterwards (RFC 9112
// §6.1). Either way nothing can be smuggled behind it.
func TestChunkedWithContentLengthClosesConnection(t *testing.T) {
	leaktest.Check(t)
	var paths []string
	seen := make(chan string, 4)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- r.URL.Path + " " + string(b)
	})
	px, _, _ := newProxy(t, up.URL)
	resp := rawExchange(t, hostOf(px), "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
	wantStatus, wantPaths := "HTTP/1.1 400", []string(nil)
	if netHTTPFront() {
		wantStatus, wantPaths = "HTTP/1.1 200", []string{"/a hello"}
	}
	if !strings.HasPrefix(resp, wantStatus) || !strings.Contains(resp, "Connection: close") {
		t.Errorf("response %q, want %s with Connection: close", resp, wantStatus)
	}
	if strings.Count(resp, "HTTP/1.1 ") != 1 {
		t.Errorf("more than one response on the connection:\n%s", resp)
	}
	close(seen)
	for s := range seen {
		paths = append(paths, s)
	}
	if diff := cmp.Diff(wantPaths, paths); diff != "" {
		t.Errorf("upstream saw (-want +got):\n%s", diff)
	}
}

// Behind sluice's Server, which refuses ambiguous framing itself, a
// chunked request keeps its connection; behind net/http's, which
// normalizes it before the handler runs, the connection closes after it.
func TestChunkedRequestKeepsConnectionBehindServer(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.URL.Path+" "+string(b))
	})
	px, _, _ := newProxy(t, up.URL)
	c, err := net.Dial("tcp", hostOf(px))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "/a hello" {
		t.Fatalf("body %q", b)
	}
	if res.Close != netHTTPFront() {
		t.Fatalf("Connection: close is %v, want %v", res.Close, netHTTPFront())
	}
	if res.Close {
		return
	}
	io.WriteString(c, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	if string(b) != "/b " {
		t.Errorf("second request: %q", b)
	}
}

// A malformed chunk size is the request's fault, logged as such (it was
// logged as a client that went away).
func TestBadChunkSizeLoggedAsBadRequest(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	px, _, logs := newProxy(t, up.URL)
	resp := rawExchange(t, hostOf(px), "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 400") {
		t.Errorf("got %q, want 400", firstLine(resp))
	}
	if l := logs.String(); !strings.Contains(l, "malformed request body") || strings.Contains(l, "client went away") {
		t.Errorf("a malformed chunk size is logged as:\n%s", l)
	}
}
