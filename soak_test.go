package sluice

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// A bounded soak (loopback, 1.5 s): clients mix keep-alive GETs, uploads
// with Content-Length and chunked, pipelined requests, uploads abandoned
// half way and streams left early. Every exchange a client finishes must
// succeed, and nothing may be left running afterwards.
func TestSoakMixedTraffic(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/stream":
			for i := 0; i < 100 && r.Context().Err() == nil; i++ {
				fmt.Fprintf(w, "data: %d\n\n", i)
				http.NewResponseController(w).Flush()
				time.Sleep(5 * time.Millisecond)
			}
		default:
			io.WriteString(w, strings.Repeat("s", 100))
		}
	})
	px, _, _ := newProxy(t, up.URL)
	addr := hostOf(px)
	end := time.Now().Add(1500 * time.Millisecond)
	var ok, bad atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			for time.Now().Before(end) {
				if soakConn(addr, r) {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 || ok.Load() == 0 {
		t.Fatalf("%d connections failed, %d succeeded", bad.Load(), ok.Load())
	}
	t.Logf("%d connections", ok.Load())
}

// soakConn runs a few random exchanges on one connection and reports
// whether every exchange it finished succeeded.
func soakConn(addr string, r *rand.Rand) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for range 1 + r.Intn(10) {
		var want string
		switch r.Intn(7) {
		case 0, 1:
			io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
			want = strings.Repeat("s", 100)
		case 2:
			want = strings.Repeat("u", r.Intn(50000))
			go fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(want), want)
		case 3:
			io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			want = "hello"
		case 4:
			io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\nGET /small HTTP/1.1\r\nHost: a\r\n\r\n")
			if got, _, ok := soakRead(br); !ok || got != strings.Repeat("s", 100) {
				return false
			}
			want = strings.Repeat("s", 100)
		case 5: // an upload abandoned half way
			io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc")
			return true
		case 6: // a stream left after its first event
			io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				return false
			}
			line, err := bufio.NewReader(res.Body).ReadString('\n')
			return err == nil && line == "data: 0\n"
		}
		got, closed, ok := soakRead(br)
		if !ok || got != want {
			return false
		}
		if closed {
			return true // behind net/http, a chunked request ends its connection
		}
	}
	return true
}

// soakRead reads a response: its body, whether it ends the connection,
// and whether it was a whole 200.
func soakRead(br *bufio.Reader) (body string, closed, ok bool) {
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		return "", false, false
	}
	b, err := io.ReadAll(res.Body)
	return string(b), res.Close, err == nil
}
