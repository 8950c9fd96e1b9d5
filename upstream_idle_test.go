package sluice

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// stallingUpstream starts h as an http:// or https:// upstream whose
// handlers are released (release closed) before the server closes, and a Proxy
// in front of it with UpstreamIdleTimeout d that trusts it.
func stallingUpstream(t *testing.T, tlsOn bool, d time.Duration, release chan struct{}, h http.HandlerFunc) (front *httptest.Server, logs *logRecorder) {
	t.Helper()
	up := httptest.NewUnstartedServer(h)
	if tlsOn {
		up.StartTLS()
	} else {
		up.Start()
	}
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) }) // runs first: handlers return
	front, _, logs = newProxy(t, up.URL, func(p *Proxy) {
		p.UpstreamIdleTimeout = d
		if tlsOn {
			p.UpstreamTLS = &tls.Config{RootCAs: up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
		}
	})
	return front, logs
}

// An upstream that stops in the middle of a response body is cut after
// UpstreamIdleTimeout: the client's response, already started, is
// aborted (never complete-looking), on http:// (sluice's engine, spliced
// body) and https:// (net/http's HTTP/2 Transport) upstreams alike.
func TestUpstreamIdleTimeoutAbortsStalledBody(t *testing.T) {
	const d = 200 * time.Millisecond
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			leaktest.Check(t)
			done := make(chan struct{})
			release := make(chan struct{})
			front, logs := stallingUpstream(t, tlsOn, d, release, func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "half")
				http.NewResponseController(w).Flush()
				select { // stalled until the proxy gives up (or the test ends)
				case <-r.Context().Done():
				case <-release:
				}
			})
			// The head and "half" may still sit in the front server's
			// buffer when the abort comes: then the client sees the
			// connection end before any response, which is as honest.
			start := time.Now()
			res, err := client(t).Get(front.URL)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(res.Body)
				res.Body.Close()
				if err == nil {
					t.Fatalf("stalled body read to the end: %q", b)
				}
			}
			elapsed := time.Since(start)
			if elapsed > d+d/4+time.Second {
				t.Errorf("stall cut after %v, want about %v", elapsed, d)
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("upstream handler still running: its connection was not closed")
			}
			if l := logs.String(); !strings.Contains(l, "aborted") {
				t.Errorf("log does not report the abort:\n%s", l)
			}
		})
	}
}

// A response body that keeps coming, a piece every third of the bound,
// passes whole, however long it takes.
func TestUpstreamIdleTimeoutSparesSteadyBody(t *testing.T) {
	const d = 200 * time.Millisecond
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			leaktest.Check(t)
			front, _ := stallingUpstream(t, tlsOn, d, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "80")
				for range 8 {
					time.Sleep(d / 3) // a slow upstream, within the bound
					io.WriteString(w, "0123456789")
					http.NewResponseController(w).Flush()
				}
			})
			res, err := client(t).Get(front.URL)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || len(b) != 80 {
				t.Fatalf("read %d of 80 bytes: %v", len(b), err)
			}
		})
	}
}

// An upstream that stops reading the request body is cut after
// UpstreamIdleTimeout, before its response started: 504.
func TestUpstreamIdleTimeoutStalledUploadIs504(t *testing.T) {
	const d = 200 * time.Millisecond
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			leaktest.Check(t)
			release := make(chan struct{})
			front, logs := stallingUpstream(t, tlsOn, d, release, func(w http.ResponseWriter, r *http.Request) {
				<-release // reads nothing
			})
			pr, pw := io.Pipe()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					if _, err := pw.Write(buf); err != nil {
						return
					}
				}
			}()
			t.Cleanup(func() { pr.CloseWithError(io.ErrClosedPipe) })
			req, _ := http.NewRequest("POST", front.URL, pr)
			start := time.Now()
			res, err := client(t).Do(req)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("status %d, want 504", res.StatusCode)
			}
			if elapsed < d || elapsed > d+d/2+2*time.Second {
				t.Errorf("answered after %v, want about %v (plus the time the buffers took)", elapsed, d)
			}
			if l := logs.String(); !strings.Contains(l, "status=504") {
				t.Errorf("log:\n%s", l)
			}
		})
	}
}

// The stall errors of the engine are timeouts to StatusFor: 504 (and
// after the response started, an abort, as the tests above show).
func TestStatusForUpstreamStall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, stall := nc.Read(make([]byte, 1))                                                // what a socket's idle bound gives
	perStream := fmt.Errorf("sluice: upstream idle for 1s: %w", os.ErrDeadlineExceeded) // what idleExchange gives
	for _, err := range []error{stall, fmt.Errorf("reading upstream body: %w", stall), perStream} {
		if got := StatusFor(err); got != http.StatusGatewayTimeout {
			t.Errorf("StatusFor(%v) = %d, want 504", err, got)
		}
	}
}

// Over h2c the bound holds per stream: a stalled response body is cut
// (its stream reset, the client's response aborted), a steady one passes.
func TestUpstreamIdleTimeoutH2C(t *testing.T) {
	leaktest.Check(t)
	const d = 200 * time.Millisecond
	release := make(chan struct{})
	stalledDone := make(chan struct{})
	up := newH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/steady" {
			for range 6 {
				io.WriteString(w, "piece")
				http.NewResponseController(w).Flush()
				time.Sleep(d / 3)
			}
			return
		}
		defer close(stalledDone)
		io.WriteString(w, "half")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done(): // the stream was reset
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) })
	front, _, logs := newProxy(t, up, func(p *Proxy) { p.UpstreamIdleTimeout = d })
	c := client(t)

	res, err := c.Get(front.URL + "/steady")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(b) != strings.Repeat("piece", 6) {
		t.Errorf("steady body: %q, %v", b, err)
	}

	res, err = c.Get(front.URL + "/stalled")
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Error("stalled body read to a clean end")
	}
	select {
	case <-stalledDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's stream was never reset")
	}
	if l := logs.String(); !strings.Contains(l, "upstream idle for 200ms") {
		t.Errorf("log does not say what timed out:\n%s", l)
	}
}

// A stream whose request body is still open (a client-streaming or
// bidirectional call: the client waits for an answer before it sends
// more) and whose upstream stops answering is cut after
// UpstreamIdleTimeout too. Found by the fault matrix (robustness/faults:
// a black hole or a reset on the upstream link of a gRPC stream). Before
// the fixes: over HTTP/2 (h2c://, https://) net/http's Transport stayed
// blocked reading the request body from the client and never ended the
// response body, so the client waited for ever; behind sluice.Server the
// abort waited for that read too, so even over HTTP/1.1 the client was
// cut only after BodyIdleTimeout.
func TestUpstreamIdleTimeoutStreamingRequest(t *testing.T) {
	const d = 300 * time.Millisecond
	for _, tt := range []struct {
		name string
		up   func(*testing.T, http.Handler) string
	}{
		{"http", func(t *testing.T, h http.Handler) string {
			s := httptest.NewServer(h)
			t.Cleanup(s.Close)
			return s.URL
		}},
		{"h2c", newH2CUpstream},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			release := make(chan struct{})
			upstream := tt.up(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.NewResponseController(w).EnableFullDuplex() // HTTP/1.1: answer while the body arrives
				b := make([]byte, 4)
				if _, err := io.ReadFull(r.Body, b); err != nil {
					return
				}
				io.WriteString(w, "pong")
				http.NewResponseController(w).Flush()
				select { // the upstream stops answering
				case <-r.Context().Done():
				case <-release:
				}
			}))
			t.Cleanup(func() { close(release) })
			front, _, _ := newProxy(t, upstream, func(p *Proxy) { p.UpstreamIdleTimeout = d })

			body, send := io.Pipe()
			t.Cleanup(func() { send.Close() })
			req, err := http.NewRequest("POST", front.URL+"/stream", body)
			if err != nil {
				t.Fatal(err)
			}
			go io.WriteString(send, "ping") // then the client waits for its answer
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b := make([]byte, 4)
			if _, err := io.ReadFull(res.Body, b); err != nil || string(b) != "pong" {
				t.Fatalf("first answer %q, %v", b, err)
			}
			stalled := time.Now()
			read := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(res.Body)
				read <- err
			}()
			select {
			case err := <-read:
				if err == nil {
					t.Error("the stalled response ended cleanly")
				}
				if after := time.Since(stalled); after > d+d/2+time.Second {
					t.Errorf("cut %v after the upstream stalled, want about %v", after, d)
				}
			case <-time.After(5 * time.Second):
				send.Close() // lets the exchange end, so that the test can
				<-read
				t.Fatalf("the stalled stream was not cut after %v (UpstreamIdleTimeout %v)", 5*time.Second, d)
			}
		})
	}
}
