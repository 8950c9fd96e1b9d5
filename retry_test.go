package sluice

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// TestStaleConnectionNeverSendsBodyWithHole: the upstream closes a pooled
// keep-alive connection while the proxy waits for the client's body. The
// engine must not retry on a new connection while the abandoned writer
// can still take bytes of the body: the upstream would get a body with a
// hole (it got an empty one). A POST fails (502); a PUT under an
// idempotent RetryPolicy is replayed whole.
func TestStaleConnectionNeverSendsBodyWithHole(t *testing.T) {
	for _, tt := range []struct {
		method     string
		retry      *RetryPolicy
		wantStatus int
	}{
		{"POST", nil, 502},
		{"PUT", &RetryPolicy{Attempts: 2, Idempotent: true}, 200},
	} {
		t.Run(tt.method, func(t *testing.T) {
			leaktest.Check(t)
			closeFirst := make(chan struct{})
			var got atomic.Value
			var conns atomic.Int32
			up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				n := conns.Add(1)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, err := io.ReadAll(req.Body)
					if err != nil {
						return
					}
					if req.Method != "GET" {
						got.Store(string(b))
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					if n == 1 {
						<-closeFirst
						c.(*net.TCPConn).SetLinger(0)
						return
					}
				}
			})
			_, p, _ := newProxy(t, up.URL(), func(p *Proxy) { p.Retry = tt.retry })
			px := newTestServer(t, p)
			c := client(t)
			res, err := c.Get(px + "/warm")
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(res.Body)
			res.Body.Close()

			pr, pw := io.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				// Once the proxy took the pooled connection and waits on
				// the body, the upstream closes that connection.
				waitGoroutine(t, "h1client.(*conn).copyBody")
				close(closeFirst)
				io.WriteString(pw, "part1-")
				io.WriteString(pw, "part2")
				pw.Close()
			}()
			req, _ := http.NewRequest(tt.method, px+"/doc", pr)
			res, err = c.Do(req)
			<-done
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(res.Body)
			res.Body.Close()
			s, _ := got.Load().(string)
			if res.StatusCode != tt.wantStatus || (s != "" || res.StatusCode == 200) && s != "part1-part2" {
				t.Errorf("status %d, upstream got %q; want %d and never a partial body", res.StatusCode, s, tt.wantStatus)
			}
		})
	}
}

func TestRequestBodyAttempts(t *testing.T) {
	read := func(r io.Reader, n int) (string, error) {
		p := make([]byte, n)
		m, err := r.Read(p)
		return string(p[:m]), err
	}
	t.Run("replay", func(t *testing.T) {
		b := new(requestBody)
		b.start(io.NopCloser(strings.NewReader("abcdefgh")), 100, 8)
		a1 := b.attempt()
		if s, _ := read(a1, 3); s != "abc" {
			t.Fatalf("first attempt read %q", s)
		}
		if bs := b.detach(); !bs.started || !bs.replayable {
			t.Fatalf("state %+v, want started and replayable", bs)
		}
		if _, err := read(a1, 3); err != errDetached {
			t.Fatalf("abandoned attempt read: %v, want errDetached", err)
		}
		a2 := b.attempt()
		got, err := io.ReadAll(a2)
		if err != nil || string(got) != "abcdefgh" {
			t.Fatalf("retry read %q, %v", got, err)
		}
	})
	t.Run("over the limit", func(t *testing.T) {
		b := new(requestBody)
		b.start(io.NopCloser(strings.NewReader("abcdefgh")), 4, -1)
		a1 := b.attempt()
		read(a1, 3)
		read(a1, 3)
		if bs := b.detach(); !bs.started || bs.replayable {
			t.Fatalf("state %+v, want started, not replayable", bs)
		}
		if _, err := read(b.attempt(), 3); err != errReplayShort {
			t.Fatalf("retry read: %v, want errReplayShort (never a body with a hole)", err)
		}
	})
	t.Run("untouched", func(t *testing.T) {
		b := new(requestBody)
		b.start(io.NopCloser(strings.NewReader("xy")), 0, 2)
		b.attempt()
		if bs := b.detach(); bs.started {
			t.Fatalf("state %+v, want not started", bs)
		}
		if got, err := io.ReadAll(b.attempt()); err != nil || string(got) != "xy" {
			t.Fatalf("retry read %q, %v", got, err)
		}
	})
}

// waitGoroutine polls the goroutine stacks until one is in fn (10 s at
// most): synchronization on a state no channel exposes.
func waitGoroutine(t *testing.T, fn string) {
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Errorf("no goroutine in %s after 10 s", fn)
}
