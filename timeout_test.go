package sluice

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// Route.Timeout bounds the whole exchange: 504 before the response
// started, an abort after, and nothing for an exchange that ends in time.
func TestRouteTimeout(t *testing.T) {
	leaktest.Check(t)
	const bound = 200 * time.Millisecond
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stall-head":
			<-release
		case "/stall-body":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			<-release
		default:
			io.WriteString(w, "fast")
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the upstream closes
	px, p, logs := newProxy(t, up.URL)
	p.AddRoute(Route{Pattern: "/", Timeout: bound})
	c := client(t)

	start := time.Now()
	res, err := c.Get(px.URL + "/stall-head")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("stalled head: %d, want 504", res.StatusCode)
	}
	if d := time.Since(start); d < bound {
		t.Errorf("504 after %v, before the bound", d)
	}
	if !strings.Contains(logs.String(), "exchange timeout (200ms) exceeded") {
		t.Errorf("log does not say what timed out:\n%s", logs)
	}

	// The response started upstream: the client connection is aborted,
	// before the head (net/http's front buffers it) or after it.
	res, err = c.Get(px.URL + "/stall-body")
	if err == nil {
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err == nil {
			t.Errorf("stalled body: read %q and a clean end, want an aborted connection", b)
		}
	}

	res, err = c.Get(px.URL + "/fast")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "fast" {
		t.Errorf("fast: %d %q", res.StatusCode, b)
	}
}

// SetTimeout from a hook keeps the sooner of two bounds.
func TestSetTimeoutKeepsTheSoonerBound(t *testing.T) {
	pr := &ProxyRequest{In: httptestRequest(), Out: httptestRequest()}
	pr.SetTimeout(time.Hour)
	pr.SetTimeout(time.Minute)
	pr.SetTimeout(2 * time.Hour)
	defer pr.stopTimer()
	dl, ok := pr.Out.Context().Deadline()
	if !ok || time.Until(dl) > time.Minute {
		t.Errorf("deadline in %v, want within a minute", time.Until(dl))
	}
	if pr.timeout != time.Minute {
		t.Errorf("timeout %v, want 1m", pr.timeout)
	}
}

func httptestRequest() *http.Request {
	r, _ := http.NewRequest("GET", "http://a/", nil)
	return r
}
