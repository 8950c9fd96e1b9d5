package sluice

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// TestShutdownUnderLoad: clients keep sending requests with bodies while
// the Serve function shuts a Server down. Every request the handler was
// serving when the shutdown began completes (200, its body echoed back
// whole); every other one completes or fails before any response header
// (a connection error: a request on a keep-alive connection closed as
// idle, a stream above HTTP/2's GOAWAY, a new connection refused), never
// with a response whose body is cut; once Serve has returned, new
// connections are refused. Over HTTP/1.1 and HTTP/2, in cleartext and
// over TLS.
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
	// The requests the handler is serving, by the client's ID.
	var active sync.Map
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Test-Id")
		active.Store(id, true)
		defer active.Delete(id)
		p.ServeHTTP(w, r)
	})
	srv := &Server{Handler: h, Logger: discardLogger()}
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
		shutdown atomic.Bool
		outcome  sync.Map // ID: "ok", or why it failed
		ok       atomic.Int64
		refused  atomic.Int64 // failed before any response header, after the shutdown began
		mu       sync.Mutex
		bad      []string // any other outcome
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
				id := fmt.Sprintf("%d-%d", i, n)
				req, err := http.NewRequest("POST", url, bytes.NewReader(body[:size]))
				if err != nil {
					panic(err)
				}
				req.Header.Set("X-Test-Id", id)
				after := shutdown.Load()
				res, err := c.Do(req)
				if err != nil {
					outcome.Store(id, err.Error())
					if after || shutdown.Load() {
						refused.Add(1)
					} else {
						fail("request failed before the shutdown: %v", err)
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
					outcome.Store(id, "ok")
					if ok.Add(1) == warmUp {
						close(warm)
					}
					continue
				}
				outcome.Store(id, "bad")
			}
		})
	}

	// Let the load run, then shut down while requests are being served.
	select {
	case <-warm:
	case <-time.After(20 * time.Second):
		t.Fatal("the load did not get going")
	}
	var inFlight []string
	for deadline := time.Now().Add(10 * time.Second); len(inFlight) == 0 && time.Now().Before(deadline); {
		runtime.Gosched()
		active.Range(func(id, _ any) bool {
			inFlight = append(inFlight, id.(string))
			return true
		})
	}
	before := ok.Load()
	shutdown.Store(true)
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
		t.Errorf("Serve: %v (requests did not finish within the grace)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		t.Error(b)
	}
	if len(inFlight) == 0 {
		t.Fatal("no request was being served when the shutdown began: the test proved nothing")
	}
	for _, id := range inFlight {
		if o, _ := outcome.Load(id); o != "ok" {
			t.Errorf("request %s, served when the shutdown began, did not complete: %v", id, o)
		}
	}
	t.Logf("%s: %d requests before the shutdown, %d being served at its start (all completed), %d refused after it",
		mode, before, len(inFlight), refused.Load())
}

// TestShutdownUpgradeInProgress: an upgrade whose 101 arrives after the
// shutdown began is a tunnel the Serve function waits for: the client
// gets its 101, then a close frame (1001), and Serve returns only once
// the tunnel has ended, not while it is still open.
func TestShutdownUpgradeInProgress(t *testing.T) {
	for _, front := range []string{"sluice", "net/http"} {
		t.Run(front, func(t *testing.T) {
			leaktest.Check(t)
			up := wstest.NewUpstream(t)
			asked, answer := make(chan struct{}), make(chan struct{})
			up.Respond = func(req *http.Request) string {
				close(asked)
				<-answer
				return wstest.ValidSwitch(req)
			}
			p := &Proxy{Director: &SingleHost{Target: up.URL}, Logger: discardLogger()}
			t.Cleanup(p.CloseIdleConnections)
			var srv HTTPServer = &Server{Handler: p, Logger: discardLogger()}
			if front == "net/http" {
				srv = &http.Server{Handler: p}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- Serve(ctx, srv, ln, 10*time.Second) }()

			dialed := make(chan *wstest.Peer, 1)
			go func() {
				c, res := wstest.Dial(t, &httptest.Server{Listener: ln}, "", nil)
				if res.StatusCode != http.StatusSwitchingProtocols {
					t.Errorf("upgrade: %s", res.Status)
				}
				dialed <- c
			}()
			<-asked
			cancel() // the shutdown begins with the upgrade at the upstream
			// Let Serve get under way before the upstream switches.
			time.Sleep(50 * time.Millisecond)
			close(answer)
			c := <-dialed
			u := up.Accept()
			if code, _ := c.ReadClose(t); code != ws.StatusGoingAway {
				t.Errorf("client got close %d, want 1001", code)
			}
			if code, _ := u.ReadClose(t); code != ws.StatusGoingAway {
				t.Errorf("upstream got close %d, want 1001", code)
			}
			// The peers have not answered: the tunnel stays open for up
			// to its close grace (1 s), and Serve must wait for it.
			select {
			case err := <-served:
				if n := p.OpenTunnels(); n > 0 {
					t.Fatalf("Serve returned (%v) with %d tunnel(s) still open", err, n)
				}
				t.Fatalf("Serve returned (%v) before the peers answered the close", err)
			case <-time.After(700 * time.Millisecond):
			}
			c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1001, "")))
			u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1001, "")))
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			if n := p.OpenTunnels(); n != 0 {
				t.Errorf("%d tunnels open after Serve returned", n)
			}
		})
	}
}
