package sluice

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// The head of a streamed response reaches the client before its body
// does: an event stream's at once (EventSource's open event), a long
// poll's once its body is slow to come. The upstream sends its first
// body bytes only after the client got the head, so a proxy that holds
// the head back until the body fails this test (by its deadline).
func TestStreamHeadNotHeldBack(t *testing.T) {
	leaktest.Check(t)
	for _, ct := range []string{"text/event-stream", "application/json"} {
		t.Run(ct, func(t *testing.T) {
			release := make(chan struct{})
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush() // chunked, no body yet
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				w.Write([]byte("data: x\n\n"))
			})
			px, _, _ := newProxy(t, up.URL)
			c := client(t)
			c.Timeout = 10 * time.Second // the head must come long before
			res, err := c.Get(px.URL + "/")
			close(release)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != ct {
				t.Errorf("head: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
			}
		})
	}
}

// An upstream that sends the head of a response of known length and then
// fails before the first byte of its body (closes, or stalls past
// UpstreamIdleTimeout) gets the client a clear error status, 502 or 504,
// not a 200 head and a cut connection: nothing had reached the client.
func TestBodyFailsBeforeFirstByte(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stall    bool
		observed bool // a Director that is an Observer (as balance.Pool)
		status   int
		class    string
	}{
		{"closed", false, false, http.StatusBadGateway, "upstream"},
		{"stalled", true, false, http.StatusGatewayTimeout, "timeout"},
		{"closed, observed", false, true, http.StatusBadGateway, "upstream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
				if tc.stall {
					select {
					case <-release:
					case <-time.After(10 * time.Second):
					}
				}
			}()
			t.Cleanup(func() { close(release); ln.Close(); wg.Wait() })
			recs := newRecords()
			obs := &observingDirector{results: make(chan Result, 2)}
			front, _, _ := newProxy(t, "http://"+ln.Addr().String(), func(p *Proxy) {
				p.UpstreamIdleTimeout = 200 * time.Millisecond
				p.Retry = &RetryPolicy{Attempts: 1}
				p.OnExchange = recs.hook
				if tc.observed {
					obs.SingleHost = *p.Director.(*SingleHost)
					p.Director = obs
				}
			})
			res, err := client(t).Get(front.URL + "/x")
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status || err != nil || !strings.Contains(string(b), strconv.Itoa(tc.status)) {
				t.Errorf("got %d %q (%v), want a whole %d", res.StatusCode, b, err, tc.status)
			}
			rec := recs.wait(t, 1)[0]
			if rec.Status != tc.status || rec.ErrorClass != tc.class || rec.ResponseBytes == 0 {
				t.Errorf("record: status %d class %q bytes %d, want %d %q", rec.Status, rec.ErrorClass, rec.ResponseBytes, tc.status, tc.class)
			}
			if tc.observed {
				select {
				case r := <-obs.results:
					if r.Err == nil || errors.Is(r.Err, errClientGone) {
						t.Errorf("the Observer heard %+v, want the upstream's failure", r)
					}
				case <-time.After(5 * time.Second):
					t.Error("the Observer heard nothing")
				}
			}
		})
	}
}
