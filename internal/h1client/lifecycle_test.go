package h1client

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// An upstream that answers an Expect: 100-continue request with a final
// response: the body is never sent, and the response must arrive whole
// (the body writer once closed the connection under it).
func TestExpectAnsweredWithFinalResponseIsWhole(t *testing.T) {
	leaktest.Check(t)
	big := strings.Repeat("x", 1<<20)
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 1048576\r\n\r\n")
		io.WriteString(c, big)
	})
	c := newClient(t)
	c.ExpectContinueTimeout = time.Minute
	req, _ := http.NewRequest("PUT", "http://"+s.addr+"/", strings.NewReader("hello"))
	req.Header.Set("Expect", "100-continue")
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || len(b) != len(big) || res.StatusCode != 413 {
		t.Fatalf("status %d: read %d of %d bytes, err %v", res.StatusCode, len(b), len(big), err)
	}
}

// A reused connection the upstream closed while the request body had not
// started: the request must fail or arrive whole, never with a hole (a
// second body writer once raced the first one for the bytes).
func TestStaleConnectionNeverTruncatesBody(t *testing.T) {
	leaktest.Check(t)
	got := make(chan string, 4)
	closeIdle := make(chan struct{})
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			if req.Method == "POST" {
				got <- string(b)
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if n == 0 {
				<-closeIdle // the upstream's idle timeout, when the test says
				return
			}
		}
	})
	c := newClient(t)
	res, body := get(t, c, "http://"+s.addr+"/", nil)
	if res.StatusCode != 200 || body != "ok" {
		t.Fatalf("priming request: %d %q", res.StatusCode, body)
	}

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/", io.NopCloser(pr))
	done := make(chan error, 1)
	go func() {
		res, err := c.Do(req, nil)
		if err == nil {
			io.ReadAll(res.Body)
			res.Body.Close()
		}
		done <- err
	}()
	close(closeIdle) // the pooled connection dies under the request
	go func() {
		pw.Write([]byte("AAAA"))
		pw.Write([]byte("BBBB"))
		pw.Close()
	}()
	err := <-done
	pr.Close() // unblock the feeder if the request gave up
	if err != nil {
		return // failing is honest: part of the body went into a dead socket
	}
	if b := <-got; b != "AAAABBBB" {
		t.Fatalf("request succeeded but the upstream got body %q, want %q", b, "AAAABBBB")
	}
}

// An upstream that answers early and then neither reads nor closes: the
// body writer must not outlive the exchange.
func TestBodyWriterEndsAfterEarlyResponse(t *testing.T) {
	hold := make(chan struct{})
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-hold
	})
	t.Cleanup(func() { close(hold) }) // runs before the server's cleanup
	c := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+s.addr+"/", io.NopCloser(endless{}))
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	res.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		if !strings.Contains(string(buf[:n]), "h1client.(*conn).writeBody") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("body writer still running 5s after the response ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	return len(p), nil
}

// slowBody yields n ten-byte pieces, one per tick.
type slowBody struct {
	n    int
	tick <-chan time.Time
}

func (s *slowBody) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	s.n--
	<-s.tick
	return copy(p, "0123456789"), nil
}

// The response header timeout runs from the end of the request: an upload
// longer than the timeout is not a slow upstream.
func TestHeaderTimeoutStartsAfterBody(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, keepAlive(func(req *http.Request, body []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body)
	}))
	c := newClient(t)
	c.ResponseHeaderTimeout = 300 * time.Millisecond
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/", io.NopCloser(&slowBody{n: 10, tick: tick.C}))
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatalf("1 s upload with a 300 ms response header timeout: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if len(b) != 100 {
		t.Errorf("echo of %d bytes, want 100", len(b))
	}
}

// Close from another goroutine ends a Read blocked on a silent upstream.
func TestCloseInterruptsBlockedRead(t *testing.T) {
	leaktest.Check(t)
	hold := make(chan struct{})
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
		<-hold // the rest never comes
	})
	t.Cleanup(func() { close(hold) })
	c := newClient(t)
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(res.Body)
		read <- err
	}()
	// Close while the reader is (or is about to be) blocked; either way
	// the read must end with an error, not hang.
	res.Body.Close()
	if err := <-read; err == nil {
		t.Fatal("read of a closed, truncated body ended without error")
	}
}

// A request body that fails half way ends the upstream connection with a
// reset, not a FIN: a server that took the end of the stream for the end
// of a Content-Length body (versitygw stored such a PUT) must see an
// error.
func TestFailedBodyResetsConnection(t *testing.T) {
	leaktest.Check(t)
	readErr := make(chan error, 1)
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			readErr <- err
			return
		}
		_, err = io.ReadAll(req.Body)
		readErr <- err
	})
	c := newClient(t)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", "http://"+s.addr+"/", io.NopCloser(pr))
	req.ContentLength = 10
	go func() {
		pw.Write([]byte("hello"))
		time.Sleep(20 * time.Millisecond) // let the bytes reach the upstream
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	if _, err := c.Do(req, nil); err == nil {
		t.Fatal("a request whose body failed succeeded")
	}
	err := <-readErr
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("upstream read the body with error %v, want a connection reset", err)
	}
}

// The janitor closes connections idle past IdleConnTimeout, and stops
// once the pool is empty (leaktest), and starts again for the next idle
// connection.
func TestJanitorClosesIdleConnections(t *testing.T) {
	leaktest.Check(t)
	closed := make(chan struct{}, 4)
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				closed <- struct{}{}
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := newClient(t)
	c.IdleConnTimeout = 40 * time.Millisecond
	for range 2 {
		if res, body := get(t, c, "http://"+s.addr+"/", nil); res.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
			t.Fatal("idle connection not closed after IdleConnTimeout")
		}
	}
}
