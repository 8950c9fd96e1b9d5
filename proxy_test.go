package sluice

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestPassThroughStatusHeadersBody(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name   string
		method string
		status int
		body   string
		want   string
	}{
		{"ok", "GET", 200, "hello", "hello"},
		{"created", "POST", 201, "made", "made"},
		{"not found", "GET", 404, "nope", "nope"},
		{"server error", "GET", 500, "boom", "boom"},
		{"teapot", "GET", 418, "short and stout", "short and stout"},
		{"head has no body", "HEAD", 200, "ignored", ""},
		{"no content", "GET", 204, "", ""},
		{"not modified", "GET", 304, "", ""},
	}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		var tc struct {
			status int
			body   string
		}
		fmt.Sscanf(r.URL.Query().Get("status"), "%d", &tc.status)
		tc.body = r.URL.Query().Get("body")
		w.Header().Set("X-Upstream", "yes")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.WriteHeader(tc.status)
		io.WriteString(w, tc.body)
	})
	px, _, _ := newProxy(t, up.URL)
	c := client(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"status": {fmt.Sprint(tc.status)}, "body": {tc.body}}
			req, _ := http.NewRequest(tc.method, px.URL+"/x?"+q.Encode(), nil)
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			if string(b) != tc.want {
				t.Errorf("body %q, want %q", b, tc.want)
			}
			if diff := cmp.Diff([]string{"a", "b"}, res.Header["X-Multi"]); diff != "" {
				t.Errorf("X-Multi (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRequestReachesUpstreamUnchanged(t *testing.T) {
	leaktest.Check(t)
	type seen struct {
		method, uri, host string
		header            http.Header
		body              string
		cl                int64
		te                []string
	}
	got := make(chan seen, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), string(b), r.ContentLength, r.TransferEncoding}
	})
	px, _, _ := newProxy(t, up.URL)

	// Content-Length framing, odd but legal path and query.
	resp := rawExchange(t, hostOf(px), "PUT /a%3Fb/c;p?q=1&q=2&x=%20 HTTP/1.1\r\nHost: example.test\r\n"+
		"X-Custom: v1\r\nX-Custom: v2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("response: %q", resp)
	}
	s := <-got
	if diff := cmp.Diff(seen{
		method: "PUT", uri: "/a%3Fb/c;p?q=1&q=2&x=%20", host: hostOf(up),
		body: "hello", cl: 5,
	}, s, cmp.AllowUnexported(seen{}), cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".header"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"v1", "v2"}, s.header["X-Custom"]); diff != "" {
		t.Errorf("X-Custom (-want +got):\n%s", diff)
	}

	// Chunked framing stays chunked.
	resp = rawExchange(t, hostOf(px), "POST /up HTTP/1.1\r\nHost: example.test\r\n"+
		"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("response: %q", resp)
	}
	s = <-got
	if s.body != "hello world" || s.cl != -1 || !cmp.Equal(s.te, []string{"chunked"}) {
		t.Errorf("chunked request arrived as body %q, ContentLength %d, TE %q", s.body, s.cl, s.te)
	}
}

func TestResponseFramingPreserved(t *testing.T) {
	leaktest.Check(t)
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			switch req.URL.Path {
			case "/length":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
			case "/chunked":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			case "/trailers":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Declared\r\n\r\n"+
					"5\r\nhello\r\n0\r\nX-Declared: d\r\nX-Undeclared: u\r\n\r\n")
			}
		}
	})
	px, _, _ := newProxy(t, up.URL())
	tests := []struct {
		path       string
		wantHeader []string // substrings of the head
		wantBody   string   // exact raw body
	}{
		{"/length", []string{"Content-Length: 5\r\n"}, "hello"},
		{"/chunked", []string{"Transfer-Encoding: chunked\r\n"}, "5\r\nhello\r\n0\r\n\r\n"},
		{"/trailers", []string{"Transfer-Encoding: chunked\r\n", "Trailer: X-Declared\r\n"},
			"5\r\nhello\r\n0\r\nX-Declared: d\r\nX-Undeclared: u\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp := rawExchange(t, hostOf(px), "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
			head, body, ok := strings.Cut(resp, "\r\n\r\n")
			if !ok {
				t.Fatalf("no head in %q", resp)
			}
			for _, h := range tc.wantHeader {
				if !strings.Contains(head+"\r\n", h) {
					t.Errorf("head lacks %q:\n%s", h, head)
				}
			}
			if body != tc.wantBody {
				t.Errorf("raw body %q, want %q", body, tc.wantBody)
			}
		})
	}
}

func TestHopByHopHeadersRemoved(t *testing.T) {
	leaktest.Check(t)
	got := make(chan http.Header, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "kept")
	})
	px, _, _ := newProxy(t, up.URL)
	resp := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: x\r\n"+
		"Connection: close, X-Hop, x-forwarded-for\r\nX-Hop: secret\r\nKeep-Alive: 300\r\n"+
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nProxy: http://evil.example:1/\r\n"+
		"Proxy-Authentication-Info: nextnonce=\"x\"\r\n"+
		"TE: trailers, deflate\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"+
		"X-End-To-End: kept\r\n\r\n")
	h := <-got
	for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Authentication-Info", "Proxy-Connection", "Proxy", "Upgrade", "Http2-Settings", "Connection"} {
		if v, ok := h[k]; ok {
			t.Errorf("upstream got hop-by-hop %s: %q", k, v)
		}
	}
	if diff := cmp.Diff([]string{"trailers"}, h["Te"]); diff != "" {
		t.Errorf("TE (-want +got):\n%s", diff)
	}
	if h.Get("X-End-To-End") != "kept" {
		t.Errorf("end-to-end header lost")
	}
	// The client nominated X-Forwarded-For as hop-by-hop: the proxy's own
	// value must survive.
	if h.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the proxy's 127.0.0.1", h.Get("X-Forwarded-For"))
	}
	head, _, _ := strings.Cut(resp, "\r\n\r\n")
	for _, bad := range []string{"X-Resp-Hop", "Keep-Alive"} {
		if strings.Contains(head, bad) {
			t.Errorf("client got hop-by-hop response header %s:\n%s", bad, head)
		}
	}
	if !strings.Contains(head, "X-End-To-End: kept") {
		t.Errorf("client lost end-to-end response header:\n%s", head)
	}
}

func TestForwardedHeaders(t *testing.T) {
	leaktest.Check(t)
	got := make(chan http.Header, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	spoof := "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\n"

	t.Run("untrusted peer: replaced", func(t *testing.T) {
		px, _, _ := newProxy(t, up.URL)
		rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: app.test\r\n"+spoof+"Connection: close\r\n\r\n")
		h := <-got
		want := map[string]string{
			"X-Forwarded-For":   "127.0.0.1",
			"X-Forwarded-Host":  "app.test",
			"X-Forwarded-Proto": "http",
			"Forwarded":         "for=127.0.0.1;host=app.test;proto=http",
		}
		for k, v := range want {
			if diff := cmp.Diff([]string{v}, h[k]); diff != "" {
				t.Errorf("%s (-want +got):\n%s", k, diff)
			}
		}
	})
	t.Run("trusted peer: extended", func(t *testing.T) {
		px, p, _ := newProxy(t, up.URL, func(p *Proxy) { p.TrustedProxies = mustPrefixes("127.0.0.0/8") })
		var seenClient atomic.Value
		p.Authorizer = AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
			seenClient.Store(pr.ClientAddr().String())
			return Allow, nil
		})
		rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: app.test\r\n"+spoof+"Connection: close\r\n\r\n")
		h := <-got
		want := map[string]string{
			"X-Forwarded-For":   "6.6.6.6, 127.0.0.1",
			"X-Forwarded-Host":  "evil.test",
			"X-Forwarded-Proto": "https",
			"Forwarded":         "for=6.6.6.6, for=127.0.0.1;host=app.test;proto=http",
		}
		for k, v := range want {
			if diff := cmp.Diff([]string{v}, h[k]); diff != "" {
				t.Errorf("%s (-want +got):\n%s", k, diff)
			}
		}
		if got := seenClient.Load(); got != "6.6.6.6" {
			t.Errorf("ClientAddr = %v, want 6.6.6.6", got)
		}
	})
}

func TestErrorMapping(t *testing.T) {
	leaktest.Check(t)
	refused := func() string { // a port nobody listens on
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}()
	slow := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.Copy(io.Discard, br) // never answers; ends when the proxy gives up
	})
	garbage := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.WriteString(c, "HTTP/1.1 ABC nonsense\r\n\r\n")
	})
	tests := []struct {
		name     string
		upstream string
		director Director
		want     int
		wantLog  string
	}{
		{"connection refused", refused, nil, 502, "status=502"},
		{"response header timeout", slow.URL(), nil, 504, "status=504"},
		{"malformed response", garbage.URL(), nil, 502, "malformed"},
		{"no upstream", refused, DirectorFunc(func(*ProxyRequest) error { return ErrNoUpstream }), 503, "status=503"},
		{"no route, no fallback", refused, DirectorFunc(func(*ProxyRequest) error { return ErrNoRoute }), 404, "status=404"},
		{"director error", refused, DirectorFunc(func(*ProxyRequest) error { return errors.New("db down") }), 502, "db down"},
		{"crlf in host", refused, DirectorFunc(func(pr *ProxyRequest) error {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "a.test\r\nX-Injected: 1"
			return nil
		}), 502, "director_bug=true"},
		{"empty host", refused, DirectorFunc(func(pr *ProxyRequest) error {
			pr.Out.URL.Scheme = "http"
			return nil
		}), 502, "empty host"},
		{"crlf in Host header", refused, DirectorFunc(func(pr *ProxyRequest) error {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "127.0.0.1:1"
			pr.Out.Host = "ok\r\nX-Injected: 1"
			return nil
		}), 502, "invalid host"},
		{"header injection by a director", slow.URL(), DirectorFunc(func(pr *ProxyRequest) error {
			u, _ := url.Parse(slow.URL())
			pr.SetURL(u)
			pr.Out.Header.Set("X-Bad", "a\r\nX-Injected: 1")
			return nil
		}), 502, "invalid header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			px, _, logs := newProxy(t, tc.upstream, func(p *Proxy) {
				p.ResponseHeaderTimeout = 200 * time.Millisecond
				if tc.director != nil {
					p.Director = tc.director
				}
			})
			res, err := client(t).Get(px.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("status %d, want %d", res.StatusCode, tc.want)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs)
			}
			if tc.want == 503 && res.Header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
		})
	}
}

func TestAbortAfterResponseStarted(t *testing.T) {
	leaktest.Check(t)
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/length":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			io.WriteString(c, strings.Repeat("x", 400))
		case "/chunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n190\r\n"+strings.Repeat("x", 400)+"\r\n")
		}
		// then the upstream dies mid-body
	})
	px, _, logs := newProxy(t, up.URL())
	for _, path := range []string{"/length", "/chunked"} {
		t.Run(path, func(t *testing.T) {
			resp := rawExchange(t, hostOf(px), "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			head, body, _ := strings.Cut(resp, "\r\n\r\n")
			if head == "" {
				return // closed before anything was flushed: cannot look complete
			}
			if !strings.HasPrefix(head, "HTTP/1.1 200") {
				t.Fatalf("head %q", head)
			}
			// The client must be able to tell: fewer bytes than announced,
			// or no terminating chunk.
			switch path {
			case "/length":
				if len(body) >= 1000 {
					t.Errorf("got %d body bytes of an aborted 1000-byte body", len(body))
				}
			case "/chunked":
				if strings.HasSuffix(body, "0\r\n\r\n") {
					t.Errorf("aborted chunked body ends with a clean last chunk: %q", body[len(body)-10:])
				}
			}
		})
	}
	if !strings.Contains(logs.String(), "aborted") {
		t.Errorf("abort not logged:\n%s", logs)
	}
}

func TestStreamingFlushesEvents(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.URL.Query().Get("ct"))
		if r.URL.Query().Get("len") != "" {
			w.Header().Set("Content-Length", "1000")
		}
		io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name, query string
		interval    time.Duration
	}{
		{"event-stream", "ct=text/event-stream&len=1", 0},
		{"unknown length", "ct=application/octet-stream", 0},
		{"flush interval", "ct=application/octet-stream&len=1", 10 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			px, _, _ := newProxy(t, up.URL, func(p *Proxy) { p.FlushInterval = tc.interval })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", px.URL+"/?"+tc.query, nil)
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			// The first event must arrive while the upstream still holds
			// the response open; a proxy that buffers blocks here until
			// the test times out.
			buf := make([]byte, len("data: first\n\n"))
			if _, err := io.ReadFull(res.Body, buf); err != nil {
				t.Fatal(err)
			}
			if string(buf) != "data: first\n\n" {
				t.Errorf("got %q", buf)
			}
		})
	}
}

func TestEarlyHintsRelayed(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("X-Final", "1")
		io.WriteString(w, "done")
	})
	px, _, _ := newProxy(t, up.URL)
	resp := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n") {
		t.Fatalf("response does not start with the 103 then the 200:\n%s", resp)
	}
	final := resp[strings.Index(resp, "HTTP/1.1 200"):]
	if strings.Contains(final, "Link:") {
		t.Errorf("103 header leaked into the final response:\n%s", final)
	}
}

func TestExpectContinue(t *testing.T) {
	leaktest.Check(t)
	t.Run("upstream rejects at once: no 100", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "who are you")
		})
		px, _, _ := newProxy(t, up.URL)
		c, err := net.Dial("tcp", hostOf(px))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 401 {
			t.Errorf("first response %d, want 401 without a 100 before it", res.StatusCode)
		}
	})
	t.Run("upstream continues: 100 then body", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body) // net/http sends 100 Continue here
			fmt.Fprintf(w, "got %s", b)
		})
		px, _, _ := newProxy(t, up.URL)
		c, err := net.Dial("tcp", hostOf(px))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("first line %q (%v), want 100 Continue", line, err)
		}
		br.ReadString('\n') // blank line after the 100
		io.WriteString(c, "hello")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(b) != "got hello" {
			t.Errorf("got %d %q", res.StatusCode, b)
		}
	})
}

func TestFullDuplexStreaming(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "echo "+line)
			http.NewResponseController(w).Flush()
		}
	})
	px, _, _ := newProxy(t, up.URL)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", px.URL+"/", pr)
	done := make(chan struct{})
	var res *http.Response
	var err error
	go func() {
		res, err = client(t).Do(req)
		close(done)
	}()
	io.WriteString(pw, "one\n")
	<-done
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for _, word := range []string{"one", "two", "three"} {
		if word != "one" {
			io.WriteString(pw, word+"\n")
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line != "echo "+word+"\n" {
			t.Errorf("got %q", line)
		}
	}
	pw.Close()
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	leaktest.Check(t)
	canceled := make(chan string, 2)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download":
			w.Header().Set("Content-Length", "1000000000")
			buf := make([]byte, 32<<10)
			for {
				if _, err := w.Write(buf); err != nil {
					canceled <- "download"
					return
				}
			}
		case "/upload":
			_, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				canceled <- "upload"
			}
		}
	})
	px, _, _ := newProxy(t, up.URL)

	t.Run("download", func(t *testing.T) {
		c, err := net.Dial("tcp", hostOf(px))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
		io.ReadFull(c, make([]byte, 100<<10))
		c.Close()
		select {
		case got := <-canceled:
			if got != "download" {
				t.Errorf("canceled %s", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream still sending 5s after the client left")
		}
	})
	t.Run("upload", func(t *testing.T) {
		c, err := net.Dial("tcp", hostOf(px))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
		c.Write(bytes.Repeat([]byte("u"), 100<<10))
		c.Close()
		select {
		case got := <-canceled:
			if got != "upload" {
				t.Errorf("canceled %s", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream still reading 5s after the client left")
		}
	})
}

func TestFallbackServesUnforwarded(t *testing.T) {
	leaktest.Check(t)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from the app") })
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from upstream") })
	u, _ := url.Parse(up.URL)
	p := &Proxy{Fallback: app}
	p.AddRoute(Route{Pattern: "/api/", Director: &SingleHost{Target: u}})
	px := newTestServer(t, p)
	for path, want := range map[string]string{"/api/x": "from upstream", "/other": "from the app"} {
		res, err := client(t).Get(px + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != want {
			t.Errorf("%s: got %q, want %q", path, b, want)
		}
	}
}

func TestRoutesFirstMatchWinsAndPathValues(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream "+r.URL.Path) })
	u, _ := url.Parse(up.URL)
	p := &Proxy{Director: &SingleHost{Target: u}}
	p.HandleFunc("POST /{index}/_search", func(w http.ResponseWriter, pr *ProxyRequest) error {
		fmt.Fprintf(w, "search %s %s", pr.In.PathValue("index"), pr.Out.PathValue("index"))
		return nil
	})
	p.HandleFunc("/", func(w http.ResponseWriter, pr *ProxyRequest) error { // added second: loses
		io.WriteString(w, "catch-all")
		return nil
	})
	px := newTestServer(t, p)
	tests := []struct{ method, path, want string }{
		{"POST", "/books/_search", "search books books"},
		{"POST", "/x/../books/_search", "search books books"}, // cleaned for matching
		{"GET", "/books/_search", "catch-all"},
	}
	for _, tc := range tests {
		resp := rawExchange(t, strings.TrimPrefix(px, "http://"), tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		if _, body, _ := strings.Cut(resp, "\r\n\r\n"); body != tc.want {
			t.Errorf("%s %s: got %q, want %q", tc.method, tc.path, body, tc.want)
		}
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "second") })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	var attempts atomic.Int32
	p := &Proxy{Director: DirectorFunc(func(pr *ProxyRequest) error {
		attempts.Add(1)
		target := "http://" + dead
		if pr.Attempt() > 0 {
			if diff := cmp.Diff([]string{dead}, pr.Tried()); diff != "" {
				t.Errorf("Tried (-want +got):\n%s", diff)
			}
			target = up.URL
		}
		u, _ := url.Parse(target)
		pr.SetURL(u)
		return nil
	})}
	px := newTestServer(t, p)
	res, err := client(t).Post(px+"/", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "second" || attempts.Load() != 2 {
		t.Errorf("got %q after %d attempts", b, attempts.Load())
	}
}

func TestNoRetryAfterRequestSent(t *testing.T) {
	leaktest.Check(t)
	var hits atomic.Int32
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		hits.Add(1)
		// reset without answering
		c.(*net.TCPConn).SetLinger(0)
	})
	px, _, _ := newProxy(t, up.URL(), func(p *Proxy) { p.Retry = &RetryPolicy{Attempts: 3, Idempotent: true} })
	res, err := client(t).Post(px.URL+"/", "text/plain", strings.NewReader("pay once"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 502 {
		t.Errorf("status %d, want 502", res.StatusCode)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("non-idempotent POST with a body reached the upstream %d times, want 1", n)
	}
}

func TestSmugglingInputRefused(t *testing.T) {
	leaktest.Check(t)
	var hits atomic.Int32
	// hits counts requests that reached the upstream complete: a request
	// whose body turns out malformed halfway is cut off, never completed.
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			hits.Add(1)
		}
	})
	px, _, _ := newProxy(t, up.URL)
	tests := []struct {
		name, req string
		want      string // status line prefix
	}{
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400"},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400"},
		{"obfuscated TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 501"},
		{"TE list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", "HTTP/1.1 501"},
		{"two TE headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 501"},
		{"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400"},
		{"signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", "HTTP/1.1 400"},
		{"bare LF in chunk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", "HTTP/1.1 400"},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "HTTP/1.1 405"},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 400"},
		{"HTTP/0.9", "GET /\r\n\r\n", "HTTP/1.1 400"},
		{"HTTP/3 version", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", "HTTP/1.1 505"},
		{"NUL in header", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", "HTTP/1.1 400"},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			resp := rawExchange(t, hostOf(px), tc.req)
			if !strings.HasPrefix(resp, tc.want) {
				t.Errorf("got %q, want %s", firstLine(resp), tc.want)
			}
			if hits.Load() != before {
				t.Errorf("request reached the upstream")
			}
		})
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func newTestServer(t *testing.T, p *Proxy) string {
	t.Helper()
	if p.Logger == nil {
		p.Logger = (&logRecorder{}).logger()
	}
	s := newFront(t, p)
	t.Cleanup(func() {
		s.Close()
		p.CloseIdleConnections()
	})
	return s.URL
}
