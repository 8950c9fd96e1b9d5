package sluice

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// TestShutdownUnderLoad: clients keep sending requests with bodies while
// the Serve function shuts a Server down. Every request either completes
// (200, its body echoed back whole) or fails before any response header
// (a connection error), never with a response whose body is cut; the
// requests in flight when the shutdown began complete; once Serve has
// returned, new connections are refused. Over HTTP/1.1 and HTTP/2, in
// cleartext and over TLS.
func TestShutdownUnderLoad(t *testing.T) {
	for _, mode := range []string{"h1", "h2c", "h1-tls", "h2-tls"} {
		t.Run(mode, func(t *testing.T) { testShutdownUnderLoad(t, mode) })
	}
}

func testShutdownUnderLoad(t *testing.T, mode string) {
	leaktest.Check(t)
	// The upstream echoes the body in two halves, a few milliseconds
	// apart, so that the shutdown falls in the middle of responses.
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
		w.Write(b[len(b)/2:])
	})
	p := proxyTo(t, up.URL)
	srv := &Server{Handler: p, Logger: discardLogger()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	tr := &http.Transport{MaxIdleConnsPerHost: 100, DisableCompression: true}
	defer tr.CloseIdleConnections()
	scheme := "http"
	switch mode {
	case "h1":
		tr.Protocols = protocols(true, false, false)
	case "h2c":
		srv.Protocols = protocols(true, false, true)
		tr.Protocols = protocols(false, false, true)
	case "h1-tls", "h2-tls":
		pki := newTestPKI(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pki.issue(t, "server", false)}}
		if ln, err = srv.TLSListener(ln, "", ""); err != nil {
			t.Fatal(err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pki.pool}
		tr.Protocols = protocols(mode == "h1-tls", mode == "h2-tls", false)
		scheme = "https"
	}
	url := scheme + "://" + addr + "/echo"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, srv, ln, 10*time.Second) }()

	var (
		shutdownAt atomic.Int64 // UnixNano when the shutdown began
		ok         atomic.Int64 // complete and verified
		spanning   atomic.Int64 // of those, sent before the shutdown and done after
		refused    atomic.Int64 // failed before any response header, after the shutdown began
		mu         sync.Mutex
		bad        []string // any other outcome
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	stop, warm := make(chan struct{}), make(chan struct{})
	const warmUp = 200 // requests done before the shutdown begins
	var wg sync.WaitGroup
	const workers = 24
	for i := range workers {
		wg.Go(func() {
			c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			body := make([]byte, 64<<10)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				size := 1 + rand.IntN(len(body))
				for j := range size {
					body[j] = byte(i + n + j)
				}
				sent := time.Now().UnixNano()
				req, err := http.NewRequest("POST", url, bytes.NewReader(body[:size]))
				if err != nil {
					panic(err)
				}
				res, err := c.Do(req)
				if err != nil {
					if s := shutdownAt.Load(); s == 0 || sent < s-int64(time.Second) {
						fail("request failed before the shutdown: %v", err)
					} else {
						refused.Add(1)
					}
					continue
				}
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				switch {
				case err != nil:
					fail("%s response cut after its header (%d of %d bytes): %v", res.Proto, len(got), size, err)
				case res.StatusCode != http.StatusOK:
					fail("%s %s: %q", res.Proto, res.Status, got)
				case !bytes.Equal(got, body[:size]):
					fail("%s body of %d bytes differs from the %d sent", res.Proto, len(got), size)
				default:
					if ok.Add(1) == warmUp {
						close(warm)
					}
					if s := shutdownAt.Load(); s != 0 && sent < s {
						spanning.Add(1)
					}
				}
			}
		})
	}

	// Let the load run, then shut down while it goes on.
	select {
	case <-warm:
	case <-time.After(20 * time.Second):
		t.Error("the load did not get going")
	}
	before := ok.Load()
	shutdownAt.Store(time.Now().UnixNano())
	cancel()
	err = <-served
	// New connections are refused once Serve returned.
	if c, derr := net.Dial("tcp", addr); derr == nil {
		c.Close()
		t.Error("a new connection was accepted after Serve returned")
	}
	close(stop)
	wg.Wait()
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		t.Error(b)
	}
	t.Logf("%s: %d requests before the shutdown, %d in flight at its start completed, %d refused after it",
		mode, before, spanning.Load(), refused.Load())
	if before == 0 || spanning.Load() == 0 {
		t.Errorf("the shutdown met no request in flight (%d before, %d spanning): the test proved nothing", before, spanning.Load())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Error("requests did not finish within the grace")
	}
}
