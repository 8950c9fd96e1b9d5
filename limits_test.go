package sluice

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// holdingUpstream answers every request once release is closed; arrived
// gets a value as each request reaches it, and hits counts them.
type holdingUpstream struct {
	arrived chan string
	release chan struct{}
	hits    atomic.Int64
	url     string
}

func newHoldingUpstream(t *testing.T) *holdingUpstream {
	h := &holdingUpstream{arrived: make(chan string, 100), release: make(chan struct{})}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		h.arrived <- r.Header.Get("X-Forwarded-For") + r.Header.Get("X-Api-Key")
		if r.URL.Path == "/hold" {
			<-h.release
		}
		io.WriteString(w, "ok")
	})
	h.url = up.URL
	return h
}

// getVia sends a GET for path through the proxy at url, each on a new
// connection, with the given headers ("Name: value").
func getVia(t *testing.T, url, path string, headers ...string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest("GET", url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

// hold sends requests for /hold in the background and waits until each
// reached the upstream; the returned function waits for their answers
// (after up.release is closed) and checks they are 200s.
func hold(t *testing.T, up *holdingUpstream, url string, headers ...[]string) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(headers))
	for _, h := range headers {
		wg.Go(func() {
			res, _, err := getVia(t, url, "/hold", h...)
			if err == nil && res.StatusCode != http.StatusOK {
				err = fmt.Errorf("held request: %s", res.Status)
			}
			errs <- err
		})
	}
	for range headers {
		select {
		case <-up.arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("a held request did not reach the upstream")
		}
	}
	return func() {
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	}
}

// TestMaxInFlight: with MaxInFlight 2 and two requests held upstream, a
// third is refused at once with 503 and Retry-After, nothing of it
// reaches the upstream, it is recorded as an overload and refusals are
// logged once, not once each; after the two end, requests pass again.
func TestMaxInFlight(t *testing.T) {
	leaktest.Check(t)
	up := newHoldingUpstream(t)
	var mu sync.Mutex
	var classes []string
	srv, p, logs := newProxy(t, up.url, func(p *Proxy) {
		p.MaxInFlight = 2
		p.OnExchange = func(rec *Record) {
			mu.Lock()
			classes = append(classes, fmt.Sprintf("%d %s", rec.Status, rec.ErrorClass))
			mu.Unlock()
		}
	})
	wait := hold(t, up, srv.URL, nil, nil)

	const refused = 20
	for range refused {
		start := time.Now()
		res, body, err := getVia(t, srv.URL, "/x")
		if err != nil {
			t.Fatal(err)
		}
		if got := res.StatusCode; got != http.StatusServiceUnavailable {
			t.Fatalf("status %d with 2 requests in flight, want 503", got)
		}
		if got := res.Header.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After %q, want 1", got)
		}
		if body != "503 Service Unavailable\n" {
			t.Errorf("body %q", body)
		}
		// The two held requests are still held: the answer came without
		// waiting for a slot.
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refusal took %v", d)
		}
	}
	if n := up.hits.Load(); n != 2 {
		t.Errorf("upstream got %d requests, want the 2 held ones", n)
	}
	close(up.release)
	wait()
	if res, _, err := getVia(t, srv.URL, "/after"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("after the release: %v %v", res, err)
	}
	<-up.arrived
	if n := p.inFlight.Load(); n != 0 {
		t.Errorf("%d requests in flight at the end", n)
	}

	mu.Lock()
	got := map[string]int{}
	for _, c := range classes {
		got[c]++
	}
	mu.Unlock()
	if diff := cmp.Diff(map[string]int{"200 ": 3, "503 overload": refused}, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), "too many in flight"); n != 1 {
		t.Errorf("%d log lines for %d refusals within a second, want 1:\n%s", n, refused, logs)
	}
	if strings.Contains(logs.String(), "exchange failed") {
		t.Errorf("a refusal logged as a failed exchange:\n%s", logs)
	}
}

// TestMaxInFlightErrorHandler: a refusal goes through ErrorHandler, with
// Retry-After already set and StatusFor giving 503.
func TestMaxInFlightErrorHandler(t *testing.T) {
	up := newHoldingUpstream(t)
	srv, _, _ := newProxy(t, up.url, func(p *Proxy) {
		p.MaxInFlight = 1
		p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(StatusFor(err))
			io.WriteString(w, "busy, retry after "+w.Header().Get("Retry-After"))
		}
	})
	wait := hold(t, up, srv.URL, nil)
	res, body, err := getVia(t, srv.URL, "/x")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusServiceUnavailable || body != "busy, retry after 1" {
		t.Errorf("%s %q", res.Status, body)
	}
	close(up.release)
	wait()
}

// TestMaxPerClient: the bound counts per client (address, IPv6 /64, or
// ClientKey), answers 429 with Retry-After, lets other clients through,
// and forgets a client once its requests ended.
func TestMaxPerClient(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name      string
		configure func(*Proxy)
		held      []string // headers of the held request
		same      []string // another client counted as the held one: 429
		other     []string // a client counted apart: passes
	}{
		{
			name:  "address",
			held:  []string{"X-Forwarded-For: 192.0.2.1"},
			same:  []string{"X-Forwarded-For: 192.0.2.1"},
			other: []string{"X-Forwarded-For: 192.0.2.2"},
		},
		{
			name:  "IPv6 by /64",
			held:  []string{"X-Forwarded-For: 2001:db8::1"},
			same:  []string{"X-Forwarded-For: 2001:db8::2:3"},
			other: []string{"X-Forwarded-For: 2001:db8:0:1::1"},
		},
		{
			name: "ClientKey",
			configure: func(p *Proxy) {
				p.ClientKey = func(pr *ProxyRequest) string { return pr.In.Header.Get("X-Api-Key") }
			},
			held:  []string{"X-Api-Key: a", "X-Forwarded-For: 192.0.2.1"},
			same:  []string{"X-Api-Key: a", "X-Forwarded-For: 192.0.2.2"},
			other: []string{"X-Api-Key: b", "X-Forwarded-For: 192.0.2.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			up := newHoldingUpstream(t)
			var mu sync.Mutex
			var classes []string
			srv, p, logs := newProxy(t, up.url, func(p *Proxy) {
				p.MaxPerClient = 1
				p.TrustedProxies = loopback
				p.OnExchange = func(rec *Record) {
					mu.Lock()
					classes = append(classes, fmt.Sprintf("%d %s", rec.Status, rec.ErrorClass))
					mu.Unlock()
				}
				if tt.configure != nil {
					tt.configure(p)
				}
			})
			wait := hold(t, up, srv.URL, tt.held)

			res, _, err := getVia(t, srv.URL, "/x", tt.same...)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "1" {
				t.Errorf("same client: %s, Retry-After %q; want 429, 1", res.Status, res.Header.Get("Retry-After"))
			}
			res, _, err = getVia(t, srv.URL, "/x", tt.other...)
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("other client: %v %v", res, err)
			}
			<-up.arrived
			if n := up.hits.Load(); n != 2 {
				t.Errorf("upstream got %d requests, want 2 (the held one and the other client's)", n)
			}
			if n := p.clients.len(); n != 1 {
				t.Errorf("%d clients in the table with one request held", n)
			}
			close(up.release)
			wait()
			if n := p.clients.len(); n != 0 {
				t.Errorf("%d clients left in the table after their requests ended", n)
			}
			res, _, err = getVia(t, srv.URL, "/x", tt.same...)
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("same client after the release: %v %v", res, err)
			}
			<-up.arrived

			mu.Lock()
			want := []string{"200 ", "200 ", "200 ", "429 overload"}
			got := append([]string(nil), classes...)
			mu.Unlock()
			slices.Sort(got)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			if !strings.Contains(logs.String(), "429: too many in flight from one client") {
				t.Errorf("refusal not logged:\n%s", logs)
			}
		})
	}
}

// TestClientTableShrinks: a burst of clients leaves no map behind.
func TestClientTableShrinks(t *testing.T) {
	var tab clientTable
	keys := make([]clientKey, 1000)
	for i := range keys {
		keys[i] = clientKey{name: fmt.Sprint(i)}
		if !tab.enter(keys[i], 1) {
			t.Fatal("refused a new client")
		}
	}
	if tab.enter(keys[0], 1) {
		t.Fatal("a second request of a client at its bound passed")
	}
	for _, k := range keys {
		tab.leave(k)
	}
	if tab.m != nil || tab.len() != 0 {
		t.Errorf("after the burst: %d entries, map kept: %v", tab.len(), tab.m != nil)
	}
}

// TestMaxInFlightTunnels: an open tunnel holds no slot of MaxInFlight or
// MaxPerClient, neither a transparent one nor a session served through
// ProxyRequest.Upgrade; while it is being set up it does.
func TestMaxInFlightTunnels(t *testing.T) {
	for _, mode := range []string{"transparent", "Upgrade"} {
		t.Run(mode, func(t *testing.T) {
			leaktest.Check(t)
			up := wstest.NewUpstream(t)
			sessionCtx := make(chan context.Context, 1)
			p := &Proxy{Director: &SingleHost{Target: up.URL}, MaxInFlight: 1, MaxPerClient: 1}
			if mode == "Upgrade" {
				p.Handle("/chat", InterceptorFunc(func(w http.ResponseWriter, pr *ProxyRequest) error {
					return pr.Upgrade(w, nil, func(ctx context.Context, u *Upgraded) {
						sessionCtx <- ctx
						io.Copy(io.Discard, u.ClientReader) // until the client closes
					})
				}))
			}
			up.Respond = func(req *http.Request) string {
				if upgradeType(req.Header) == "" {
					return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
				}
				return wstest.ValidSwitch(req)
			}
			srv := newTestProxy(t, p)
			c, res := wstest.Dial(t, srv, "", nil)
			defer c.Close()
			if res.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %s", res.Status)
			}
			u := up.Accept()
			defer u.Close()
			if mode == "Upgrade" {
				select {
				case <-sessionCtx:
				case <-time.After(10 * time.Second):
					t.Fatal("the session did not start")
				}
			}
			res, _, err := getVia(t, srv.URL, "/plain")
			if err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("a request with a tunnel open: %v %v", res, err)
			}
		})
	}
}

// TestMaxInFlightZeroCost: the bound costs no allocation per request.
func TestMaxInFlightZeroCost(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation count needs a warm pool")
	}
	u := benchUpstream(t)
	allocs := func(p *Proxy) float64 {
		defer p.CloseIdleConnections()
		req, _ := http.NewRequest("GET", "http://proxy.test/small", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		w := &discardWriter{h: make(http.Header)}
		return testing.AllocsPerRun(500, func() {
			clear(w.h)
			p.ServeHTTP(w, req)
		})
	}
	without := allocs(&Proxy{Director: &SingleHost{Target: u}, MaxInFlight: -1})
	with := allocs(&Proxy{Director: &SingleHost{Target: u}, MaxPerClient: 10})
	if with > without {
		t.Errorf("%v allocations per request with MaxInFlight and MaxPerClient, %v without", with, without)
	}
}
