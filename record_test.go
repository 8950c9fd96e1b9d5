package sluice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// records collects the Records a Proxy delivers, copied.
type records struct {
	mu   sync.Mutex
	all  []Record
	cond *sync.Cond
}

func newRecords() *records {
	r := &records{}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *records) hook(rec *Record) {
	c := *rec
	c.Attempts = append([]Result(nil), rec.Attempts...)
	c.Request = nil
	r.mu.Lock()
	r.all = append(r.all, c)
	r.cond.Broadcast()
	r.mu.Unlock()
}

// wait returns the records once there are n of them, failing the test
// after 10 s.
func (r *records) wait(t *testing.T, n int) []Record {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(10 * time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.all) < n && time.Now().Before(deadline) {
		r.cond.Wait()
	}
	if len(r.all) < n {
		t.Fatalf("%d records, want %d", len(r.all), n)
	}
	return append([]Record(nil), r.all...)
}

// TestRecordOncePerOutcome: every kind of exchange ends with exactly one
// Record that says what the client got.
func TestRecordOncePerOutcome(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Length", "12")
			io.WriteString(w, "hello world!")
		case "/cut":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "only part")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/notfound":
			http.NotFound(w, r)
		}
	})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := closed.Addr().String()
	closed.Close()
	recs := newRecords()
	u, _ := url.Parse(up.URL)
	dead, _ := url.Parse("http://" + deadAddr)
	p := &Proxy{Director: &SingleHost{Target: u}, OnExchange: recs.hook, Logger: discardLogger(), RequestIDHeader: "X-Request-Id"}
	p.AddRoute(Route{Pattern: "/dead", Director: &SingleHost{Target: dead}})
	p.AddRoute(Route{Pattern: "/denied", Authorizer: AuthorizerFunc(func(*ProxyRequest) (Decision, error) {
		return Deny(http.StatusForbidden, "no\n"), nil
	})})
	p.Handle("/panic", InterceptorFunc(func(http.ResponseWriter, *ProxyRequest) error { panic("hook bug") }))
	p.Handle("/local", Local(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		w.Write(b)
	})))
	front := newFront(t, p)
	t.Cleanup(front.Close)
	t.Cleanup(p.CloseIdleConnections)
	addr := hostOf(front)

	type want struct {
		status      int
		class       string
		reqBytes    int64
		respBytes   int64
		attempts    int
		errContains string
	}
	cases := []struct {
		name string
		do   func()
		want want
	}{
		{"ok with a body", func() {
			rawExchange(t, addr, "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde")
		}, want{status: 200, reqBytes: 5, respBytes: 12, attempts: 1}},
		{"upstream 404", func() { rawExchange(t, addr, "GET /notfound HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") },
			want{status: 404, respBytes: 19, attempts: 1}},
		{"malformed", func() {
			rawExchange(t, addr, "GET /a/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		},
			want{status: 400, class: "policy", errContains: "bad request target"}},
		{"denied", func() { rawExchange(t, addr, "GET /denied HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") },
			want{status: 403, class: "policy", respBytes: 3}},
		{"refused, retried", func() { rawExchange(t, addr, "GET /dead HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") },
			want{status: 502, class: "refused", attempts: 2, respBytes: 16, errContains: "refused"}},
		{"aborted after headers", func() { rawExchange(t, addr, "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n") },
			want{status: 200, class: "upstream", respBytes: 9, attempts: 1, errContains: "unexpected EOF"}},
		{"panic in a hook", func() { rawExchange(t, addr, "GET /panic HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") },
			want{status: 500, class: "internal", errContains: "hook bug"}},
		{"local", func() {
			rawExchange(t, addr, "POST /local HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz")
		}, want{status: 202, reqBytes: 3, respBytes: 3}},
		{"client gone", func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
			time.Sleep(50 * time.Millisecond) // the request reaches the upstream
			c.Close()
		}, want{status: StatusClientClosedRequest, class: "client", attempts: 1, errContains: "client went away"}},
	}
	for i, tc := range cases {
		tc.do()
		got := recs.wait(t, i+1)[i]
		w := tc.want
		if got.Status != w.status || got.ErrorClass != w.class || got.RequestBytes != w.reqBytes ||
			got.ResponseBytes != w.respBytes || len(got.Attempts) != w.attempts ||
			(w.errContains == "") != (got.Err == nil) || got.Err != nil && !strings.Contains(got.Err.Error(), w.errContains) {
			t.Errorf("%s: record status %d class %q bytes %d/%d attempts %d err %v; want %+v",
				tc.name, got.Status, got.ErrorClass, got.RequestBytes, got.ResponseBytes, len(got.Attempts), got.Err, w)
		}
		if got.Start.IsZero() || got.Duration <= 0 || got.Context == nil || got.Method == "" {
			t.Errorf("%s: record misses start, duration, context or method: %+v", tc.name, got)
		}
		if tc.name != "malformed" && len(got.RequestID) != 32 {
			t.Errorf("%s: request ID %q", tc.name, got.RequestID)
		}
	}
	close(release)
	// No second record for any of them.
	time.Sleep(100 * time.Millisecond) // a duplicate would come from the handler's goroutine, already done
	if all := recs.wait(t, len(cases)); len(all) != len(cases) {
		t.Errorf("%d records for %d exchanges", len(all), len(cases))
	}
	refused := recs.all[4]
	if refused.Attempts[0].Err == nil || refused.Attempts[1].Upstream != deadAddr || refused.Upstream != deadAddr {
		t.Errorf("refused attempts: %+v", refused.Attempts)
	}
	ok := recs.all[0]
	if ok.Path != "/ok" || ok.Upstream != u.Host || ok.UpstreamHeader <= 0 || ok.UpstreamHeader > ok.Duration ||
		ok.Attempts[0].Status != 200 || ok.Attempts[0].Duration <= 0 || ok.Client.String() != "127.0.0.1" {
		t.Errorf("ok record: %+v", ok)
	}
}

// Tunnels report when they end, with the bytes each way.
func TestRecordTunnels(t *testing.T) {
	leaktest.Check(t)
	recs := newRecords()
	echo := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			msg, op, err := wsutil.ReadClientData(c)
			if err != nil {
				return
			}
			if err := wsutil.WriteServerMessage(c, op, msg); err != nil {
				return
			}
		}
	})
	tcp := newTCPUpstream(t, echoUntilEOF)
	u, _ := url.Parse(echo.URL)
	attempts := make(chan Result, 4)
	p := &Proxy{OnExchange: recs.hook, OnAttempt: func(*ProxyRequest) func(Result) {
		return func(r Result) { attempts <- r }
	}, Director: DirectorFunc(func(pr *ProxyRequest) error {
		if pr.In.Method == http.MethodConnect {
			return tunnelDirector(pr)
		}
		pr.SetURL(u)
		return nil
	})}
	front := tunnelFront(t, p)

	conn, _, _, err := ws.Dial(context.Background(), "ws://"+hostOf(front)+"/chat")
	if err != nil {
		t.Fatal(err)
	}
	if err := wsutil.WriteClientText(conn, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if msg, err := wsutil.ReadServerText(conn); err != nil || string(msg) != "hello" {
		t.Fatalf("echo %q, %v", msg, err)
	}
	conn.Close()
	wsRec := recs.wait(t, 1)[0]
	// "hello" masked by the client: 2 + 4 + 5 bytes; unmasked back: 2 + 5.
	if wsRec.Status != http.StatusSwitchingProtocols || wsRec.RequestBytes != 11 || wsRec.ResponseBytes != 7 || wsRec.Err != nil {
		t.Errorf("WebSocket record: status %d bytes %d/%d err %v", wsRec.Status, wsRec.RequestBytes, wsRec.ResponseBytes, wsRec.Err)
	}

	c, br, _ := connectTo(t, hostOf(front), tcp.addr, "12345")
	buf := make([]byte, 5)
	io.ReadFull(br, buf)
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(br)
	c.Close()
	cr := recs.wait(t, 2)[1]
	if cr.Status != http.StatusOK || cr.Method != "CONNECT" || cr.Host != tcp.addr || cr.RequestBytes != 5 || cr.ResponseBytes != 8 {
		t.Errorf("CONNECT record: %s %s status %d bytes %d/%d", cr.Method, cr.Host, cr.Status, cr.RequestBytes, cr.ResponseBytes)
	}
	if cr.Upstream != tcp.addr || len(cr.Attempts) != 1 || cr.Attempts[0].Duration <= 0 || cr.Connect <= 0 {
		t.Errorf("CONNECT record: upstream %q attempts %+v connect %v", cr.Upstream, cr.Attempts, cr.Connect)
	}
	// OnAttempt heard of both ends: the WebSocket's upstream exchange and
	// the CONNECT's dial, each when its tunnel ended.
	for _, want := range []string{u.Host, tcp.addr} {
		select {
		case r := <-attempts:
			if r.Upstream != want || r.Duration <= 0 {
				t.Errorf("attempt %+v, want one to %s", r, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no attempt end for %s", want)
		}
	}
}

// Request IDs: a trusted peer's is kept, any other request gets a new
// one; it goes upstream, back to the client and into failure logs.
func TestRequestID(t *testing.T) {
	got := make(chan string, 4)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("X-Request-Id") })
	for _, trusted := range []bool{false, true} {
		px, p, _ := newProxy(t, up.URL, func(p *Proxy) {
			p.RequestIDHeader = "X-Request-Id"
			if trusted {
				p.TrustedProxies = loopbackPrefixes
			}
		})
		_ = p
		for _, sent := range []string{"", "abc-123", "bad id", strings.Repeat("x", 129)} {
			req, _ := http.NewRequest("GET", px.URL+"/", nil)
			if sent != "" {
				req.Header.Set("X-Request-Id", sent)
			}
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			upID, resID := <-got, res.Header.Get("X-Request-Id")
			keep := trusted && sent == "abc-123"
			switch {
			case upID != resID:
				t.Errorf("trusted=%v sent %q: upstream got %q, client %q", trusted, sent, upID, resID)
			case keep && upID != sent:
				t.Errorf("trusted peer's ID %q replaced by %q", sent, upID)
			case !keep && (upID == sent || len(upID) != 32):
				t.Errorf("trusted=%v sent %q: ID %q, want a new one", trusted, sent, upID)
			}
		}
	}
	// The ID in a failure's log line.
	logs := &logRecorder{}
	p := &Proxy{Director: DirectorFunc(func(*ProxyRequest) error { return errors.New("boom") }), RequestIDHeader: "X-Request-Id", Logger: logs.logger()}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if id := w.Header().Get("X-Request-Id"); id == "" || !strings.Contains(logs.String(), "request_id="+id) {
		t.Errorf("log %q lacks request_id=%s", logs.String(), id)
	}
}

// The Record costs no allocation per request, with the hook set or not
// (the bound is one).
func TestRecordAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation count needs a warm pool")
	}
	u := benchUpstream(t)
	req := httptest.NewRequest("GET", "http://proxy.test/small", nil)
	allocs := func(p *Proxy) float64 {
		defer p.CloseIdleConnections()
		w := &discardWriter{h: make(http.Header)}
		return testing.AllocsPerRun(500, func() {
			clear(w.h)
			p.ServeHTTP(w, req)
		})
	}
	var seen int
	without := allocs(&Proxy{Director: &SingleHost{Target: u}})
	with := allocs(&Proxy{Director: &SingleHost{Target: u}, OnExchange: func(rec *Record) { seen += rec.Status }})
	if with > without+1 {
		t.Errorf("%v allocations per request with OnExchange, %v without: want at most one more", with, without)
	}
	if seen == 0 {
		t.Error("the hook never ran")
	}
}

var loopbackPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Result.ErrorClass classifies an attempt's failure as Record.ErrorClass
// does an exchange's.
func TestResultErrorClass(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{context.DeadlineExceeded, "timeout"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, "refused"},
		{fmt.Errorf("%w: short head", errBadResponse), "bad_response"},
		{fmt.Errorf("%w: reset", errClientGone), "client"},
		{io.ErrUnexpectedEOF, "upstream"},
	} {
		if got := (Result{Err: tc.err}).ErrorClass(); got != tc.want {
			t.Errorf("Result{Err: %v}.ErrorClass() = %q, want %q", tc.err, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = (Result{Status: 200}).ErrorClass() }); n != 0 {
		t.Errorf("ErrorClass of a success: %v allocations", n)
	}
}
