package squid

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// TestHelperOverload fills the only helper slot and the queue: the next
// request gets 503 at once, even with Bypass.
func TestHelperOverload(t *testing.T) {
	leaktest.Check(t)
	up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(up.Close)
	script := filepath.Join(t.TempDir(), "slow.sh")
	// Answers nothing for /wait until stdin closes.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nwhile read -r url rest; do case \"$url\" in */wait*) ;; *) echo OK ;; esac; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := Start(Config{Command: script, Children: 1, QueueSize: 1, Timeout: 30 * time.Second, Bypass: true})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(up.URL)
	p := &sluice.Proxy{Authorizer: h, Director: &sluice.SingleHost{Target: target}}
	front := newFront(t, p)
	t.Cleanup(front.Close)
	t.Cleanup(p.CloseIdleConnections)
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)

	done := make(chan int, 2)
	send := func() {
		req, _ := http.NewRequest("GET", front.URL+"/wait", nil)
		res, err := c.Do(req)
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}
	waitLoad := func(inFlight, queued int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			f, q := h.pool.Load()
			if f == inFlight && q == queued {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("load %d in flight, %d queued; want %d, %d", f, q, inFlight, queued)
			}
			time.Sleep(time.Millisecond)
		}
	}
	go send()
	waitLoad(1, 0)
	go send()
	waitLoad(1, 1)
	req, _ := http.NewRequest("GET", front.URL+"/third", nil)
	if r := do(t, c, req); r.status != http.StatusServiceUnavailable {
		t.Errorf("third request: status %d, want 503", r.status)
	}
	// Closing the helpers ends the waiting requests; with Bypass they pass.
	h.Close()
	for range 2 {
		if s := <-done; s != http.StatusOK {
			t.Errorf("waiting request after close: status %d, want 200 (bypass)", s)
		}
	}
}
