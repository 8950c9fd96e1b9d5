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
