package h1client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/h1wire"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// server is a raw upstream: serve gets each connection.
type server struct {
	addr    string
	accepts atomic.Int32
}

func newServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// keepAlive answers every request on the connection with resp(req).
func keepAlive(resp func(req *http.Request, body []byte) string) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			if _, err := io.WriteString(c, resp(req, body)); err != nil {
				return
			}
		}
	}
}

func newClient(t *testing.T) *Client {
	c := &Client{}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func get(t *testing.T, c *Client, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	method := "GET"
	if body != nil {
		method = "POST"
	}
	req, _ := http.NewRequest(method, url, body)
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res, string(b)
}

func TestFramingAndReuse(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, keepAlive(func(req *http.Request, body []byte) string {
		switch req.URL.Path {
		case "/length":
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: t1\r\nX-U: u1\r\n\r\n"
		case "/empty":
			return "HTTP/1.1 204 No Content\r\n\r\n"
		case "/echo":
			return "HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body)
		}
		return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
	}))
	c := newClient(t)
	base := "http://" + s.addr
	for i := 0; i < 3; i++ {
		res, body := get(t, c, base+"/length", nil)
		if body != "hello" || res.ContentLength != 5 || res.Status != "200 OK" {
			t.Errorf("length: %q %d %q", body, res.ContentLength, res.Status)
		}
		res, body = get(t, c, base+"/chunked", nil)
		if body != "abcde" || res.ContentLength != -1 {
			t.Errorf("chunked: %q %d", body, res.ContentLength)
		}
		if diff := cmp.Diff(http.Header{"X-T": {"t1"}, "X-U": {"u1"}}, res.Trailer); diff != "" {
			t.Errorf("trailer (-want +got):\n%s", diff)
		}
		res, body = get(t, c, base+"/empty", nil)
		if body != "" || res.StatusCode != 204 {
			t.Errorf("204: %q %d", body, res.StatusCode)
		}
		_, body = get(t, c, base+"/echo", strings.NewReader("sent"))
		if body != "sent" {
			t.Errorf("echo (Content-Length): %q", body)
		}
		_, body = get(t, c, base+"/echo", io.MultiReader(strings.NewReader("chunk"), strings.NewReader("ed")))
		if body != "chunked" {
			t.Errorf("echo (chunked): %q", body)
		}
	}
	if n := s.accepts.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1 reused", n)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestCloseDelimitedAndConnectionClose(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/eof" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
	})
	c := newClient(t)
	res, body := get(t, c, "http://"+s.addr+"/eof", nil)
	if body != "until the end" || !res.Close {
		t.Errorf("close-delimited: %q close=%v", body, res.Close)
	}
	res, body = get(t, c, "http://"+s.addr+"/close", nil)
	if body != "ok" || !res.Close {
		t.Errorf("Connection: close: %q close=%v", body, res.Close)
	}
	_, _ = get(t, c, "http://"+s.addr+"/close", nil)
	if n := s.accepts.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (none reusable)", n)
	}
}

type recHooks struct {
	codes []int
	wrote bool
	dials []time.Duration
}

func (h *recHooks) Got1xx(code int, _ http.Header) { h.codes = append(h.codes, code) }
func (h *recHooks) WroteHeaders()                  { h.wrote = true }
func (h *recHooks) GotConn(d time.Duration)        { h.dials = append(h.dials, d) }

func TestInformationalAndExpectContinue(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, keepAlive(func(req *http.Request, body []byte) string {
		// net/http's ReadRequest does not send 100 itself; we answer it
		// before the final response, after the body arrived.
		return "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body)
	}))
	c := newClient(t)
	h := &recHooks{}
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	res, err := c.Do(req, h)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if diff := cmp.Diff([]int{103}, h.codes); diff != "" || !h.wrote {
		t.Errorf("1xx (-want +got):\n%s wrote=%v", diff, h.wrote)
	}
	// GotConn: the time to connect for a new connection, 0 for a pooled one.
	req, _ = http.NewRequest("GET", "http://"+s.addr+"/", nil)
	res, err = c.Do(req, h)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if len(h.dials) != 2 || h.dials[0] <= 0 || h.dials[1] != 0 {
		t.Errorf("GotConn got %v, want a dial time then 0 (pooled)", h.dials)
	}

	// An upstream that rejects at once: the body must not be sent.
	rejected := make(chan string, 1)
	s2 := newServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		b, _ := io.ReadAll(req.Body)
		rejected <- string(b)
	})
	c.ExpectContinueTimeout = 5 * time.Second
	req, _ = http.NewRequest("PUT", "http://"+s2.addr+"/", strings.NewReader("secret body"))
	req.Header.Set("Expect", "100-continue")
	res, err = c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("status %d", res.StatusCode)
	}
	if got := <-rejected; got != "" {
		t.Errorf("body sent after an immediate rejection: %q", got)
	}
}

func TestStaleConnectionRetried(t *testing.T) {
	leaktest.Check(t)
	// Each connection answers its first request, then reads the second
	// and closes without a word: what a server that timed out an idle
	// connection looks like to a client that just reused it.
	var n atomic.Int32
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || i > 0 {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"+itoa(int(n.Add(1))))
		}
	})
	c := newClient(t)
	_, b1 := get(t, c, "http://"+s.addr+"/", nil)
	_, b2 := get(t, c, "http://"+s.addr+"/", nil)
	if b1 != "1" || b2 != "2" {
		t.Errorf("got %q then %q", b1, b2)
	}
	if got := s.accepts.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

func TestMalformedResponses(t *testing.T) {
	leaktest.Check(t)
	tests := []struct{ name, resp string }{
		{"garbage status", "HTTP/1.1 ABC nope\r\n\r\n"},
		{"short status", "HTTP/1.1 20\r\n\r\n"},
		{"http/2 version", "HTTP/2.0 200 OK\r\n\r\n"},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"},
		{"unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"space in header name", "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"},
		{"huge head", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 2000) + "\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tc.resp)
			})
			c := newClient(t)
			req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
			res, err := c.Do(req, nil)
			if err == nil {
				res.Body.Close()
				t.Fatalf("accepted: status %d", res.StatusCode)
			}
			if !errors.Is(err, ErrBadResponse) {
				t.Errorf("error %v is not ErrBadResponse", err)
			}
		})
	}
}

func TestTruncatedBodies(t *testing.T) {
	leaktest.Check(t)
	for _, resp := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
	} {
		s := newServer(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, resp)
		})
		c := newClient(t)
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
		res, err := c.Do(req, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil {
			t.Errorf("truncated body %q read without error", resp)
		}
	}
}

func TestCancelClosesConnection(t *testing.T) {
	leaktest.Check(t)
	got, gone := make(chan struct{}), make(chan struct{})
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		close(got)
		io.Copy(io.Discard, br) // returns when the client closes
		close(gone)
	})
	c := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Do(req, nil)
		errc <- err
	}()
	<-got
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	<-gone
}

func TestResponseHeaderTimeout(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.Copy(io.Discard, br)
	})
	c := newClient(t)
	c.ResponseHeaderTimeout = 50 * time.Millisecond
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	_, err := c.Do(req, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v, want a timeout", err)
	}
}

func TestHeaderInjectionRefused(t *testing.T) {
	leaktest.Check(t)
	var hits atomic.Int32
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err == nil {
			hits.Add(1)
		}
	})
	c := newClient(t)
	for _, mutate := range []func(*http.Request){
		func(r *http.Request) { r.Header.Set("X-A", "1\r\nX-Injected: 1") },
		func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} },
		func(r *http.Request) { r.Host = "a\r\nX-Injected: 1" },
		func(r *http.Request) { r.Method = "GET /x HTTP/1.1\r\n" },
	} {
		req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
		mutate(req)
		if _, err := c.Do(req, nil); err == nil {
			t.Errorf("request with injected header sent")
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d malformed requests reached the server", hits.Load())
	}
}

// FuzzResponse feeds arbitrary bytes as an upstream response: the client
// must never panic, must return ErrBadResponse or a body, and must never
// reuse a connection it did not read to a clean end.
func FuzzResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, resp string) {
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			defer server.Close()
			br := bufio.NewReader(server)
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(server, resp)
		}()
		c := &Client{MaxResponseHeaderBytes: 4096}
		pc := &conn{client: c, pool: &hostPool{}, nc: client}
		pc.lr = h1wire.LimitReader{R: client, N: -1, TooLarge: errHeaderTooLarge}
		pc.acquireBuffers()
		req, _ := http.NewRequest("GET", "http://fuzz.test/", nil)
		res, err := pc.roundTrip(req, nil)
		if err != nil {
			return
		}
		if res.StatusCode < 100 || res.StatusCode > 999 {
			t.Fatalf("status %d", res.StatusCode)
		}
		if res.StatusCode == 101 {
			res.Body.Close()
			return
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if err == nil && res.ContentLength >= 0 && int64(len(b)) != res.ContentLength {
			t.Fatalf("read %d bytes of a %d-byte body without error", len(b), res.ContentLength)
		}
	})
}

// CheckAddr is asked before each dial and before each reuse: a pooled
// connection it refuses is closed, never used.
func TestCheckAddr(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, keepAlive(func(*http.Request, []byte) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" }))
	var refuse atomic.Bool
	var asked atomic.Int32
	c := &Client{CheckAddr: func(_ context.Context, ap netip.AddrPort) error {
		asked.Add(1)
		if ap.String() != s.addr {
			t.Errorf("CheckAddr(%v), want %s", ap, s.addr)
		}
		if refuse.Load() {
			return errors.New("refused")
		}
		return nil
	}}
	t.Cleanup(c.CloseIdleConnections)
	if _, body := get(t, c, "http://"+s.addr+"/", nil); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if _, body := get(t, c, "http://"+s.addr+"/", nil); body != "ok" {
		t.Fatalf("body %q", body)
	}
	if n, a := s.accepts.Load(), asked.Load(); n != 1 || a != 2 {
		t.Errorf("%d connections, %d checks; want 1 connection (reused) checked twice", n, a)
	}
	refuse.Store(true)
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	if res, err := c.Do(req, nil); err == nil {
		res.Body.Close()
		t.Fatal("request went through a refused address")
	}
	if n := s.accepts.Load(); n != 1 {
		t.Errorf("%d connections after the refusal, want 1 (none dialed)", n)
	}
	if idle := len(c.pool(s.addr).idle); idle != 0 {
		t.Errorf("%d idle connections left after the refusal, want 0", idle)
	}
}

// A 101 response's body hands back the connection's buffers: the writer at
// once, the reader once the bytes the upstream sent behind the 101 are
// read (which come first, in order). An idle tunnel holds neither.
func TestUpgradeReleasesBuffers(t *testing.T) {
	for _, behind := range []string{"", "\x81\x05hello"} {
		client, server := net.Pipe()
		go func() {
			defer server.Close()
			br := bufio.NewReader(server)
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(server, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"+behind)
			io.WriteString(server, "after")
		}()
		c := &Client{}
		pc := &conn{client: c, pool: &hostPool{}, nc: client}
		pc.lr = h1wire.LimitReader{R: client, N: -1, TooLarge: errHeaderTooLarge}
		pc.acquireBuffers()
		req, _ := http.NewRequest("GET", "http://up.test/", nil)
		res, err := pc.roundTrip(req, nil)
		if err != nil {
			t.Fatal(err)
		}
		u := res.Body.(*upgradeBody)
		if pc.br != nil || pc.bw != nil {
			t.Errorf("behind %q: the connection still holds its buffers", behind)
		}
		if (u.br != nil) != (behind != "") {
			t.Errorf("behind %q: body reader held: %v", behind, u.br != nil)
		}
		got, err := io.ReadAll(res.Body)
		if err != nil || string(got) != behind+"after" {
			t.Errorf("behind %q: read %q (%v), want %q", behind, got, err, behind+"after")
		}
		if u.br != nil {
			t.Errorf("behind %q: the reader is still held after its bytes were read", behind)
		}
		res.Body.Close()
	}
}
