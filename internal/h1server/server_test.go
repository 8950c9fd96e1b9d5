package h1server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// start serves h on a loopback port and returns the server and its
// address; the server closes when the test ends.
func start(t *testing.T, h http.Handler, configure ...func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, c := range configure {
		c(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		for end := time.Now().Add(5 * time.Second); s.Conns() > 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
	})
	return s, ln.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// readResponse reads one response (to a request with method) and its body.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return res, string(b)
}

// echo answers with what it saw of the request.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	fmt.Fprintf(w, "%s %s host=%s len=%d body=%s", r.Method, r.RequestURI, r.Host, r.ContentLength, b)
	for _, k := range []string{"X-T"} {
		if v := r.Trailer.Get(k); v != "" {
			fmt.Fprintf(w, " trailer %s=%s", k, v)
		}
	}
})

func TestKeepAliveAndPipelining(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, echo)
	c, br := dial(t, addr)
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	_, b1 := readResponse(t, br, "GET")
	_, b2 := readResponse(t, br, "POST")
	time.Sleep(20 * time.Millisecond) // now the connection waits idle
	io.WriteString(c, "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	_, b3 := readResponse(t, br, "GET")
	want := []string{"GET /1 host=a len=0 body=", "POST /2 host=a len=2 body=hi", "GET /3 host=a len=0 body="}
	if diff := cmp.Diff(want, []string{b1, b2, b3}); diff != "" {
		t.Error(diff)
	}
}

func TestRequestFraming(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, echo, func(s *Server) { s.MaxHeaderBytes = 16 << 10 })
	long := strings.Repeat("a", 12<<10)
	tests := []struct {
		name, req, status, body string
	}{
		{"content-length", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "200", "POST /p host=a len=5 body=hello"},
		{"chunked with trailer", "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: v\r\n\r\n", "200", "POST /p host=a len=-1 body=abcde trailer X-T=v"},
		{"undeclared trailer", "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\nX-T: u\r\n\r\n", "200", "POST /p host=a len=-1 body=z trailer X-T=u"},
		{"identical lengths", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "200", "POST /p host=a len=1 body=x"},
		{"absolute form", "GET http://b.example/x?q HTTP/1.1\r\nHost: a\r\n\r\n", "200", "GET http://b.example/x?q host=b.example len=0 body="},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", "200", "GET / host= len=0 body="},
		{"bare LF lines", "GET /lf HTTP/1.1\nHost: a\n\n", "200", "GET /lf host=a len=0 body="},
		{"leading empty line", "\r\nGET /e HTTP/1.1\r\nHost: a\r\n\r\n", "200", "GET /e host=a len=0 body="},
		{"request line beyond the buffer", "GET /" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", "200", "GET /" + long + " host=a len=0 body="},
		{"both framings", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400", ""},
		{"chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400", ""},
		{"coding folded with a blank line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n  \r\n\r\n0\r\n\r\n", "501", ""},
		{"unknown coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501", ""},
		{"differing lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", "400", ""},
		{"signed length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", "400", ""},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", "400", ""},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400", ""},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "400", ""},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", "400", ""},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", "400", ""},
		{"CR in request line", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", "400", ""},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "400", ""},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "400", ""},
		{"HTTP/0.9", "GET /\r\n\r\n", "400", ""},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400", ""},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505", ""},
		{"HTTP/3", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", "505", ""},
		{"unknown expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", "417", ""},
		{"invalid trailer field", "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\nX-T : u\r\n\r\n", "400", "reading request trailer: invalid field name \"X-T \"\n"},
		{"bad trailer name", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n", "400", ""},
		{"header too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 20<<10) + "\r\n\r\n", "431", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			io.WriteString(c, tc.req)
			res, body := readResponse(t, br, "GET")
			if got := res.Status[:3]; got != tc.status {
				t.Fatalf("status %s, want %s (body %q)", res.Status, tc.status, body)
			}
			if tc.body != "" && body != tc.body {
				t.Errorf("handler saw %q, want %q", body, tc.body)
			}
			if tc.status != "200" && !res.Close {
				t.Error("a refused request must close the connection")
			}
		})
	}
}

func TestResponseFraming(t *testing.T) {
	leaktest.Check(t)
	big := strings.Repeat("x", 10<<10)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "<html>hi")
		case "/big":
			io.WriteString(w, big)
		case "/typed":
			w.Header().Set("Content-Type", "application/x-test")
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "abc")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				panic("write to 204 did not fail")
			}
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		case "/inject":
			w.Header().Set("X-A", "1\r\nX-Evil: 1")
			w.Header()["Bad Name"] = []string{"v"}
		case "/hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "final")
		case "/nodate":
			w.Header()["Date"] = nil
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "plain")
		}
	}))
	t.Run("small body gets a length", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
		res, body := readResponse(t, br, "GET")
		if res.ContentLength != 8 || body != "<html>hi" || res.Header.Get("Content-Type") != "text/html; charset=utf-8" || res.Header.Get("Date") == "" {
			t.Errorf("got length %d, body %q, header %v", res.ContentLength, body, res.Header)
		}
	})
	t.Run("big body is chunked", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
		res, body := readResponse(t, br, "GET")
		if len(res.TransferEncoding) != 1 || body != big || res.Close {
			t.Errorf("got TE %v, %d bytes, close %v", res.TransferEncoding, len(body), res.Close)
		}
	})
	t.Run("HTTP/1.0 gets the end of the body as close", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		res, body := readResponse(t, br, "GET")
		if res.Proto != "HTTP/1.0" || res.TransferEncoding != nil || body != big || !res.Close {
			t.Errorf("got %s TE %v, %d bytes, close %v", res.Proto, res.TransferEncoding, len(body), res.Close)
		}
	})
	t.Run("HTTP/1.0 keep-alive with a length", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /typed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		res, body := readResponse(t, br, "GET")
		if res.Close || body != "abc" || res.Header.Get("Connection") != "keep-alive" {
			t.Errorf("got close %v, body %q, header %v", res.Close, body, res.Header)
		}
		io.WriteString(c, "GET /typed HTTP/1.0\r\n\r\n")
		if res, _ := readResponse(t, br, "GET"); !res.Close {
			t.Error("second HTTP/1.0 response without keep-alive must close")
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "HEAD /typed HTTP/1.1\r\nHost: a\r\n\r\nGET /typed HTTP/1.1\r\nHost: a\r\n\r\n")
		res, body := readResponse(t, br, "HEAD")
		if res.ContentLength != 3 || body != "" {
			t.Errorf("HEAD: length %d body %q", res.ContentLength, body)
		}
		if _, body := readResponse(t, br, "GET"); body != "abc" {
			t.Errorf("GET after HEAD: %q", body)
		}
	})
	t.Run("204", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /nocontent HTTP/1.1\r\nHost: a\r\n\r\nGET /typed HTTP/1.1\r\nHost: a\r\n\r\n")
		res, _ := readResponse(t, br, "GET")
		if res.StatusCode != 204 || res.Header.Get("Content-Length") != "" {
			t.Errorf("got %s %v", res.Status, res.Header)
		}
		if _, body := readResponse(t, br, "GET"); body != "abc" {
			t.Errorf("after 204: %q", body)
		}
	})
	t.Run("trailers", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /trailers HTTP/1.1\r\nHost: a\r\n\r\n")
		res, body := readResponse(t, br, "GET")
		want := http.Header{"X-Sum": {"42"}, "X-Late": {"yes"}}
		if diff := cmp.Diff(want, res.Trailer); diff != "" || body != "body" {
			t.Errorf("body %q, trailer (-want +got):\n%s", body, diff)
		}
	})
	t.Run("no response splitting", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /inject HTTP/1.1\r\nHost: a\r\n\r\n")
		res, _ := readResponse(t, br, "GET")
		if res.Header.Get("X-Evil") != "" || res.Header.Get("X-A") != "1  X-Evil: 1" || len(res.Header["Bad Name"]) > 0 {
			t.Errorf("header %v", res.Header)
		}
	})
	t.Run("103 early hints", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /hints HTTP/1.1\r\nHost: a\r\n\r\n")
		line, _ := br.ReadString('\n')
		if line != "HTTP/1.1 103 Early Hints\r\n" {
			t.Fatalf("first line %q", line)
		}
		hints, err := http.ReadResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 103 Early Hints\r\n")), nil)
		_ = hints
		_ = err
		for {
			l, _ := br.ReadString('\n')
			if l == "\r\n" {
				break
			}
		}
		res, body := readResponse(t, br, "GET")
		if res.StatusCode != 200 || body != "final" || res.Header.Get("Link") != "" {
			t.Errorf("final %s %q %v", res.Status, body, res.Header)
		}
	})
	t.Run("no 1xx to HTTP/1.0", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /hints HTTP/1.0\r\n\r\n")
		res, body := readResponse(t, br, "GET")
		if res.StatusCode != 200 || body != "final" {
			t.Errorf("got %s %q", res.Status, body)
		}
	})
	t.Run("suppressed Date and sniffing", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET /nodate HTTP/1.1\r\nHost: a\r\n\r\n")
		res, _ := readResponse(t, br, "GET")
		if _, ok := res.Header["Date"]; ok || res.Header.Get("Content-Type") != "" {
			t.Errorf("header %v", res.Header)
		}
	})
}

func TestContentLengthMismatch(t *testing.T) {
	leaktest.Check(t)
	errc := make(chan error, 1)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4")
		if r.URL.Path == "/long" {
			_, err := io.WriteString(w, "12345")
			errc <- err
			return
		}
		io.WriteString(w, "12")
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
	if err := <-errc; err != http.ErrContentLength {
		t.Errorf("writing past Content-Length: %v", err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(res.Body); err != io.ErrUnexpectedEOF {
		t.Errorf("short body: %v, want unexpected EOF (the connection closes)", err)
	}
	c2, br2 := dial(t, addr)
	io.WriteString(c2, "GET /short HTTP/1.1\r\nHost: a\r\n\r\n")
	res, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(res.Body); err != io.ErrUnexpectedEOF {
		t.Errorf("short body: %v, want unexpected EOF", err)
	}
}

func TestExpectContinue(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		echo(w, r)
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v; want 100 Continue", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "abc")
	if _, body := readResponse(t, br, "POST"); body != "POST /e host=a len=3 body=abc" {
		t.Errorf("got %q", body)
	}

	// Refused without reading: no 100, and the connection closes, since
	// the client may or may not send the body.
	c2, br2 := dial(t, addr)
	io.WriteString(c2, "POST /refuse HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	res, _ := readResponse(t, br2, "POST")
	if res.StatusCode != 403 || !res.Close {
		t.Errorf("got %s, close %v; want 403 and close", res.Status, res.Close)
	}
}

func TestUnreadBody(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ignored "+r.URL.Path)
	}))
	t.Run("small: drained, connection kept", func(t *testing.T) {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("z", 1000))
		res, _ := readResponse(t, br, "POST")
		io.WriteString(c, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); res.Close || body != "ignored /b" {
			t.Errorf("close %v, next %q", res.Close, body)
		}
	})
	t.Run("large: connection closed", func(t *testing.T) {
		c, br := dial(t, addr)
		go func() {
			fmt.Fprintf(c, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n")
			c.Write(make([]byte, 1<<20))
		}()
		res, _ := readResponse(t, br, "POST")
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("connection still open after a large unread body (close %v)", res.Close)
		}
	})
}

// A large upload refused before it is read reaches the client as the
// refusal, not as a reset: the connection closes its write side first and
// keeps reading for a while.
func TestRefusedUploadGetsTheResponse(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for range 3 {
		req, _ := http.NewRequest("PUT", "http://"+addr+"/", bytes.NewReader(make([]byte, 12<<20)))
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("client got %v, want the 413", err)
		}
		res.Body.Close()
		if res.StatusCode != 413 || !res.Close {
			t.Errorf("got %s, close %v; want 413 with Connection: close", res.Status, res.Close)
		}
	}
}

func TestClientGoneCancelsContext(t *testing.T) {
	leaktest.Check(t)
	ended := make(chan error, 1)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(5 * time.Second):
			ended <- nil
		}
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-ended; err != context.Canceled {
		t.Fatalf("handler context: %v, want canceled", err)
	}
}

// A body cut short by the client fails with io.ErrUnexpectedEOF and, as
// with net/http, cancels the request's context.
func TestCutBodyCancelsContext(t *testing.T) {
	leaktest.Check(t)
	got := make(chan string, 1)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- fmt.Sprint(err, " ", r.Context().Err())
	}))
	c, _ := dial(t, addr)
	io.WriteString(c, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
	c.Close()
	if s := <-got; s != "unexpected EOF context canceled" {
		t.Errorf("handler saw %q", s)
	}
}

func TestTimeouts(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, echo, func(s *Server) {
		s.IdleTimeout = 50 * time.Millisecond
		s.ReadHeaderTimeout = 50 * time.Millisecond
	})
	t.Run("idle", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		readResponse(t, br, "GET")
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("idle connection: %v, want EOF", err)
		}
	})
	t.Run("slow head", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHos")
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != http.StatusRequestTimeout || !res.Close {
			t.Fatalf("slow head: %v %v, want 408 and close", res, err)
		}
		io.Copy(io.Discard, res.Body)
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("slow head: %v, want EOF", err)
		}
	})
	t.Run("silent client", func(t *testing.T) {
		_, br := dial(t, addr)
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("silent client: %v, want EOF", err)
		}
	})
}

func TestShutdown(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	started := make(chan struct{})
	s, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle, ibr := dial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, ibr, "GET")
	busy, bbr := dial(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Errorf("idle connection after Shutdown: %v, want EOF", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	res, body := readResponse(t, bbr, "GET")
	if body != "done" || !res.Close {
		t.Errorf("in-flight response %q, close %v; want done and Connection: close", body, res.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still open")
	}
}

func TestHijack(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer nc.Close()
		io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, 64)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				nc.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("%v %v", res, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "early" {
		t.Fatalf("bytes sent with the upgrade: %q %v", got, err)
	}
	io.WriteString(c, "later")
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "later" {
		t.Fatalf("after: %q %v", got, err)
	}
}

func TestPanic(t *testing.T) {
	leaktest.Check(t)
	var logged bytes.Buffer
	var mu sync.Mutex
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}), func(s *Server) {
		s.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
	})
	for _, path := range []string{"/abort", "/boom"} {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(res.Body); err == nil {
			t.Errorf("%s: body ended cleanly after a panic", path)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logged.String(), "level=ERROR"); n != 1 || !strings.Contains(logged.String(), "panic=boom") {
		t.Errorf("log (want one panic, boom):\n%s", logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A body of known length handed over as an *io.LimitedReader over a TCP
// connection (what sluice's engine does) arrives whole, whatever path
// ReadFrom takes.
func TestReadFromConnection(t *testing.T) {
	leaktest.Check(t)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	src, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	go func() {
		for {
			c, err := src.Accept()
			if err != nil {
				return
			}
			c.Write(payload)
			c.Close()
		}
	}()
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up, err := net.Dial("tcp", src.Addr().String())
		if err != nil {
			panic(err)
		}
		defer up.Close()
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: up, N: int64(len(payload))})
	}))
	c, br := dial(t, addr)
	for range 2 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != string(payload) {
			t.Fatalf("body of %d bytes differs", len(body))
		}
	}
}

// A keep-alive connection waiting for its next request holds no buffer
// and one goroutine.
func TestIdleConnectionHoldsNoBuffer(t *testing.T) {
	leaktest.Check(t)
	s, addr := start(t, echo)
	const n = 20
	before := runtime.NumGoroutine()
	for range n {
		c, br := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		readResponse(t, br, "GET")
	}
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	var held int
	for c := range s.conns {
		if c.state.Load() != stateIdle {
			t.Errorf("connection state %d, want idle", c.state.Load())
		}
		if c.br != nil || c.outp != nil {
			held++
		}
	}
	s.mu.Unlock()
	if held > 0 {
		t.Errorf("%d of %d idle connections hold buffers", held, n)
	}
	if g := runtime.NumGoroutine() - before; g > n {
		t.Errorf("%d goroutines for %d idle connections", g, n)
	}
}

// The request parser agrees with net/http's on every request both accept.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\n",
		"GET http://b/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	srv := &Server{Handler: echo}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c := newConn(srv, &bytesConn{r: bytes.NewReader(raw)})
		c.acquireReader()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c.cancel = cancel // a failed body read cancels the request, as in serve
		req, _, err := c.readRequest(ctx)
		if err != nil {
			return // refusing more than net/http is allowed (ambiguous framing)
		}
		// RFC 9112 §2.2 lets a server ignore an empty line before the
		// request line, as this one does and net/http does not.
		wraw := raw
		if rest, ok := bytes.CutPrefix(wraw, []byte("\r\n")); ok {
			wraw = rest
		} else if rest, ok := bytes.CutPrefix(wraw, []byte("\n")); ok {
			wraw = rest
		}
		wr := bytes.NewReader(wraw)
		wbr := bufio.NewReader(wr)
		want, werr := http.ReadRequest(wbr)
		if werr != nil {
			t.Fatalf("accepted a head net/http refuses (%v):\n%q", werr, raw)
		}
		// Bodies are compared when both read to the end: this parser also
		// takes a bare LF ending a trailer at the end of the input.
		body, berr := io.ReadAll(req.Body)
		wantBody, wberr := io.ReadAll(want.Body)
		if berr != nil || wberr != nil {
			body, wantBody = nil, nil
		} else {
			// Both found the end of the message at the same byte: the
			// next request starts where net/http would start it.
			rest := c.br.Buffered() + len(c.pre) + c.nc.(*bytesConn).r.Len()
			if wrest := wbr.Buffered() + wr.Len(); rest != wrest {
				t.Fatalf("request %q ends %d bytes before the input's end, net/http's %d", raw, rest, wrest)
			}
		}
		got := []any{req.Method, req.RequestURI, req.URL.String(), req.Host, req.ProtoMinor, req.ContentLength, string(body), req.Close}
		exp := []any{want.Method, want.RequestURI, want.URL.String(), want.Host, want.ProtoMinor, want.ContentLength, string(wantBody), want.Close}
		if diff := cmp.Diff(exp, got); diff != "" {
			t.Fatalf("request %q differs from net/http's (-net/http +sluice):\n%s", raw, diff)
		}
		wh := want.Header.Clone()
		delete(wh, "Host")
		if diff := cmp.Diff(wh, req.Header); diff != "" {
			t.Fatalf("header of %q differs from net/http's:\n%s", raw, diff)
		}
	})
}

// bytesConn is a net.Conn that reads from a byte slice and drops writes.
type bytesConn struct{ r *bytes.Reader }

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

var _ = httputil.DumpRequest

// Framing fields set after WriteHeader have no effect (as with net/http):
// the server frames the body it sends, so that a handler cannot make the
// head disagree with the body and desync the client's next response.
func TestFramingHeaderAfterWriteHeader(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		switch r.URL.Path {
		case "/cl":
			w.Header().Set("Content-Length", "10")
		case "/te":
			w.Header().Set("Transfer-Encoding", "chunked")
		}
		io.WriteString(w, "hello")
	}))
	for _, path := range []string{"/cl", "/te"} {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n", path)
		res, body := readResponse(t, br, "GET")
		if body != "hello" || len(res.Header["Content-Length"])+len(res.TransferEncoding) != 1 {
			t.Errorf("%s: body %q, Content-Length %q, Transfer-Encoding %q", path, body, res.Header["Content-Length"], res.TransferEncoding)
		}
		if _, body := readResponse(t, br, "GET"); body != "hello" {
			t.Errorf("%s: next response %q", path, body)
		}
	}
}

// plainListener hides the connections' descriptors (as tls.Listener does),
// so that the server waits for requests with a blocking read, not a peek.
type plainListener struct{ net.Listener }

type plainConn struct{ net.Conn }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// A keep-alive connection without a descriptor to peek at waits for its
// next request for IdleTimeout, not ReadHeaderTimeout.
func TestIdleTimeoutWithoutDescriptor(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: echo, ReadHeaderTimeout: 50 * time.Millisecond, IdleTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- s.Serve(plainListener{ln}) }()
	defer func() { s.Close(); <-done }()
	c, br := dial(t, ln.Addr().String())
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, br, "GET")
	time.Sleep(200 * time.Millisecond) // idle longer than the head timeout
	io.WriteString(c, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "GET /2 host=a len=0 body=" {
		t.Errorf("second request: %q", body)
	}
}

// Trailers given with http.TrailerPrefix after a small body still reach
// the client (net/http then chunks the body instead of sending a length).
func TestPrefixTrailerAfterSmallBody(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hi")
		w.Header().Set(http.TrailerPrefix+"X-Sum", "7")
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	res, body := readResponse(t, br, "GET")
	if body != "hi" || res.Trailer.Get("X-Sum") != "7" {
		t.Errorf("body %q, trailer %v", body, res.Trailer)
	}
}

// A 101 written with WriteHeader before Hijack (as coder/websocket does)
// keeps its Connection: Upgrade alone, as with net/http.
func TestSwitchingProtocolsHead(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "echo")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		nc.Close()
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	head, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) || bytes.Count(head, []byte("\r\nConnection:")) != 1 {
		t.Errorf("got %q", head)
	}
}

// A connection accepted before Shutdown whose first request is still on
// its way is served (with Connection: close), not closed as idle: as with
// net/http, only a connection that served a request, or has sent nothing
// for ReadHeaderTimeout, counts as idle.
func TestShutdownServesNewConnection(t *testing.T) {
	leaktest.Check(t)
	s, addr := start(t, echo)
	c, br := dial(t, addr)
	time.Sleep(20 * time.Millisecond) // accepted
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	time.Sleep(20 * time.Millisecond) // Shutdown closed what it sees as idle
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request on a connection accepted before Shutdown: %v", err)
	}
	io.ReadAll(res.Body)
	if !res.Close {
		t.Error("response during Shutdown without Connection: close")
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// A handler that panics after Hijack leaves the connection to whoever
// it handed it to, as with net/http.
func TestPanicAfterHijack(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		go func() {
			defer nc.Close()
			time.Sleep(20 * time.Millisecond)
			io.WriteString(nc, "tunnel")
		}()
		panic(http.ErrAbortHandler)
	}))
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",               // a goroutine waits for the next request
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\n", // none does
	} {
		c, br := dial(t, addr)
		io.WriteString(c, req)
		if b, err := io.ReadAll(br); string(b) != "tunnel" {
			t.Errorf("client got %q, %v", b, err)
		}
	}
}

// A HEAD response whose handler wrote a small body (without setting
// Content-Length) gets the length that body would have, as with net/http.
func TestHeadLengthFromBody(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	res, _ := readResponse(t, br, "HEAD")
	if res.ContentLength != 5 {
		t.Errorf("HEAD: Content-Length %d, want 5", res.ContentLength)
	}
	if _, body := readResponse(t, br, "GET"); body != "hello" {
		t.Errorf("GET after HEAD: %q", body)
	}
}

// A body with a Content-Encoding is not sniffed for a Content-Type (as
// net/http: the sniffed type would be the encoding's, say gzip's).
func TestNoSniffingEncodedBody(t *testing.T) {
	leaktest.Check(t)
	gz := "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		if r.URL.Path == "/readfrom" {
			w.(io.ReaderFrom).ReadFrom(strings.NewReader(gz))
			return
		}
		io.WriteString(w, gz)
	}))
	for _, path := range []string{"/write", "/readfrom"} {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
		res, body := readResponse(t, br, "GET")
		if ct, ok := res.Header["Content-Type"]; ok || body != gz {
			t.Errorf("%s: Content-Type %q, body %q", path, ct, body)
		}
	}
}

// Over a tls.Listener, Request.TLS is set, as net/http sets it (sluice
// derives X-Forwarded-Proto and secure cookies from it).
func TestRequestTLS(t *testing.T) {
	leaktest.Check(t)
	c := dialTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || !r.TLS.HandshakeComplete {
			io.WriteString(w, "no TLS state")
			return
		}
		io.WriteString(w, "tls")
	}))
	br := bufio.NewReader(c)
	for range 2 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "tls" {
			t.Errorf("handler saw %q", body)
		}
	}
}

// dialTLSServer serves h on a Server over a tls.Listener (a self-signed
// certificate) and returns a TLS client connection to it, with a 10 s
// deadline; both end with the test.
func dialTLSServer(t *testing.T, h http.Handler) *tls.Conn {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cfg := &tls.Config{Certificates: ts.TLS.Certificates}
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h}
	done := make(chan error, 1)
	go func() { done <- s.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { s.Close(); <-done })
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// Random pipelined requests (no body, Content-Length, chunked with a
// trailer; bodies read or left to the server to drain), sent in random
// pieces, are answered in order, each with what its handler saw.
func TestPipelinedFragments(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("read") == "0" {
			fmt.Fprintf(w, "%s", r.URL.Path)
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", r.URL.Path, b)
	}))
	rng := rand.New(rand.NewSource(1))
	for iter := 0; iter < 100; iter++ {
		var sb strings.Builder
		var want []string
		n := 1 + rng.Intn(6)
		for i := 0; i < n; i++ {
			path := fmt.Sprintf("/r%d", i)
			body := strings.Repeat("x", rng.Intn(3000))
			q := ""
			if rng.Intn(3) == 0 {
				q = "?read=0"
			}
			switch rng.Intn(3) {
			case 0:
				fmt.Fprintf(&sb, "GET %s%s HTTP/1.1\r\nHost: a\r\n\r\n", path, q)
				if q != "" {
					want = append(want, path)
				} else {
					want = append(want, path+":")
				}
			case 1:
				fmt.Fprintf(&sb, "POST %s%s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", path, q, len(body), body)
				if q != "" {
					want = append(want, path)
				} else {
					want = append(want, path+":"+body)
				}
			case 2:
				fmt.Fprintf(&sb, "POST %s%s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", path, q)
				rest := body
				for len(rest) > 0 {
					k := 1 + rng.Intn(len(rest))
					fmt.Fprintf(&sb, "%x\r\n%s\r\n", k, rest[:k])
					rest = rest[k:]
				}
				sb.WriteString("0\r\nX-T: 1\r\n\r\n")
				if q != "" {
					want = append(want, path)
				} else {
					want = append(want, path+":"+body)
				}
			}
		}
		raw := sb.String()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		wrng := rand.New(rand.NewSource(int64(iter)))
		go func() {
			rng := wrng
			rest := raw
			for len(rest) > 0 {
				k := 1 + rng.Intn(len(rest))
				if rng.Intn(2) == 0 {
					k = len(rest)
				}
				c.Write([]byte(rest[:k]))
				rest = rest[k:]
				if rng.Intn(3) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		br := bufio.NewReader(c)
		for i, w := range want {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("iter %d response %d: %v", iter, i, err)
			}
			b, _ := io.ReadAll(res.Body)
			if string(b) != w {
				t.Fatalf("iter %d response %d: %q want %q", iter, i, b, w)
			}
		}
		c.Close()
	}
}

// A hijacker that takes what the reader buffered and then reads the
// connection itself (a CONNECT tunnel splicing it) gets every byte too:
// what the waiting goroutine read is in the reader's buffer.
func TestHijackAfterWaiterReadBuffered(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the client's first bytes arrive meanwhile
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer nc.Close()
		pending, _ := brw.Reader.Peek(brw.Reader.Buffered())
		nc.Write(pending)
		buf := make([]byte, 10-len(pending))
		n, _ := io.ReadFull(nc, buf)
		nc.Write(buf[:n])
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
	time.Sleep(10 * time.Millisecond)
	io.WriteString(c, "01234")
	time.Sleep(60 * time.Millisecond)
	io.WriteString(c, "56789")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(br)
	if string(got) != "0123456789" {
		t.Fatalf("hijacker echoed %q (%v)", got, err)
	}
}

// A handler that hijacks at once, before the goroutine that waits for the
// next request has even run, then answers (a CONNECT's 200) and reads the
// connection itself gets what the client sends after the answer: that
// goroutine never reads it. The race is narrow: many rounds.
func TestHijackBeforeWaiterRuns(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer nc.Close()
		io.WriteString(nc, "ok\n")
		buf := make([]byte, 4+brw.Reader.Buffered())
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		pending, _ := brw.Reader.Peek(brw.Reader.Buffered())
		n := copy(buf, pending)
		m, _ := io.ReadFull(nc, buf[n:4])
		nc.Write(buf[:n+m])
	}))
	for i := range 1000 {
		c, br := dial(t, addr)
		io.WriteString(c, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := br.ReadString('\n'); line != "ok\n" {
			t.Fatalf("round %d: answer %q (%v)", i, line, err)
		}
		io.WriteString(c, "ping")
		got, err := io.ReadAll(br)
		c.Close()
		if string(got) != "ping" {
			t.Fatalf("round %d: the hijacker got %q of %q (%v)", i, got, "ping", err)
		}
	}
}

// A handler that hijacks a request without Upgrade (so a goroutine already
// waits for the next request, and may have read bytes) gets every byte
// the client sent after the request.
func TestHijackAfterWaiterRead(t *testing.T) {
	leaktest.Check(t)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the client's bytes arrive meanwhile
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer nc.Close()
		buf := make([]byte, 10)
		n, _ := io.ReadFull(brw, buf)
		nc.Write(buf[:n])
	}))
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(10 * time.Millisecond)
	io.WriteString(c, "01234")
	time.Sleep(60 * time.Millisecond)
	io.WriteString(c, "56789")
	got, err := io.ReadAll(br)
	if string(got) != "0123456789" {
		t.Fatalf("hijacker echoed %q (%v)", got, err)
	}
}

// A handler that aborts (panic with http.ErrAbortHandler) while another
// goroutine of its own is still blocked reading the request body (a
// proxy's upstream writer, waiting for a client that waits for the
// answer) gets its connection closed at once. Before the fix the server
// first waited for that read to end, which took the client's next byte or
// BodyIdleTimeout: the client saw its answer stall instead of cut.
func TestAbortWhileBodyReadInProgress(t *testing.T) {
	leaktest.Check(t)
	reading := make(chan struct{})
	readErr := make(chan error, 1)
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		b := make([]byte, 4)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			t.Errorf("first piece of the body: %v", err)
			return
		}
		io.WriteString(w, "pong")
		w.(http.Flusher).Flush()
		go func() {
			close(reading)
			_, err := r.Body.Read(make([]byte, 16)) // blocks: the client sends no more
			readErr <- err
		}()
		<-reading
		panic(http.ErrAbortHandler)
	}), func(s *Server) { s.BodyIdleTimeout = 30 * time.Second })
	c, br := dial(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nping\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := io.ReadAll(res.Body)
	if err == nil {
		t.Errorf("body %q ended cleanly after an abort", b)
	}
	if after := time.Since(start); after > 2*time.Second {
		t.Errorf("connection closed %v after the abort, want at once", after)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the body read in progress succeeded after the abort")
		}
	case <-time.After(5 * time.Second):
		t.Error("the body read in progress never ended")
	}
}
