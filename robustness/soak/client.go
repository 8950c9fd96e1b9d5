package soak

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// outcome is how one exchange ended, as its client saw it.
type outcome int

// The results of an exchange.
const (
	// outOK: the exchange succeeded and its bytes were verified.
	outOK outcome = iota
	// outAbandoned: the client left on purpose (an upload cut half way, a
	// stream left early); nothing is checked but that the proxy copes.
	outAbandoned
	// outClear: a clear failure: 502, 503 or 504 before the response
	// headers, or a response, stream or WebSocket session aborted after
	// them (the client sees an error, never a clean end).
	outClear
	// outBad: any other failure: a wrong status, wrong bytes, a body that
	// ends cleanly but short, an error before the response headers, a
	// client deadline. Always a violation.
	outBad
)

func (r outcome) String() string {
	return [...]string{"ok", "abandoned", "clear", "bad"}[r]
}

// reach says which upstreams an exchange may reach, to tell whether the
// schedule explains its failure.
type reach int

// The reaches of the kinds of exchange.
const (
	reachNone reach = iota // answered by the proxy, or the stable origin
	reachPool              // the pool's targets
	reachSolo              // the /solo/ target
)

// clients are the HTTP clients of one run.
type clients struct {
	base     string       // http://proxy
	proxy    string       // host:port of the HTTP/1.1 and h2c listener
	origin   string       // host:port of the stable origin
	h1       *http.Client // HTTP/1.1 keep-alive
	h2c      *http.Client // HTTP/2 with prior knowledge
	h2tls    *http.Client // HTTP/2 over TLS (base is tlsBase)
	tlsBase  string
	forward  *http.Client // absolute-form requests through the proxy
	deadline time.Duration
}

func newClients(addrs ProxyAddrs, origin string, roots *x509.CertPool) *clients {
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	h2 := new(http.Protocols)
	h2.SetHTTP2(true)
	tr := func(p *http.Protocols) *http.Transport {
		return &http.Transport{Protocols: p, DisableCompression: true, MaxIdleConnsPerHost: 64,
			IdleConnTimeout: 30 * time.Second, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}
	}
	fwd := tr(h1)
	fwd.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: addrs.HTTP})
	return &clients{
		base: "http://" + addrs.HTTP, proxy: addrs.HTTP, origin: origin,
		h1:      &http.Client{Transport: tr(h1)},
		h2c:     &http.Client{Transport: tr(h2c)},
		h2tls:   &http.Client{Transport: tr(h2)},
		tlsBase: "https://" + addrs.TLS,
		forward: &http.Client{Transport: fwd},
		// The slowest exchange (a 16 MiB body on a busy machine) takes
		// about a second; a minute means the exchange hung.
		deadline: time.Minute,
	}
}

// prime makes one request over each protocol and leaves the HTTP/1.1
// connection idle long enough to be parked (sluice.Server parks idle
// connections after 100 ms), so that the server parts started on first
// use are in the baseline; then it closes the idle connections.
func (c *clients) prime(ctx context.Context) error {
	for _, p := range []struct {
		hc   *http.Client
		base string
	}{{c.h1, c.base}, {c.h2c, c.base}, {c.h2tls, c.tlsBase}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/status", nil)
		res, err := p.hc.Do(req)
		if err != nil {
			return fmt.Errorf("priming the proxy: %w", err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	c.closeIdle()
	return nil
}

func (c *clients) closeIdle() {
	for _, hc := range []*http.Client{c.h1, c.h2c, c.h2tls, c.forward} {
		hc.CloseIdleConnections()
	}
}

// kind is one kind of exchange.
type kind struct {
	Name   string
	Weight int
	reach  reach
	run    func(ctx context.Context, x *exchange) (outcome, error)
}

// exchange is what a kind's run gets.
type exchange struct {
	c    *clients
	hc   *http.Client // the client of the worker's protocol
	base string       // its base URL
	id   string       // request ID, unique in the run
	user string
	rng  *rand.Rand
}

// h1Kinds are the kinds HTTP/1.1 workers run; h2Kinds those HTTP/2 ones
// run (no WebSocket, CONNECT or raw-connection kinds over HTTP/2).
var h1Kinds, h2Kinds []kind

func init() {
	common := []kind{
		{"get", 30, reachPool, runGet},
		{"upload-cl", 6, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runUpload(ctx, x, "", false) }},
		{"upload-chunked", 6, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runUpload(ctx, x, "", true) }},
		{"download", 8, reachPool, runDownload},
		{"sse", 4, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runSSE(ctx, x, false) }},
		{"sse-left-early", 1, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runSSE(ctx, x, true) }},
		{"capture", 5, reachPool, runCapture},
		{"local", 3, reachNone, runLocal},
		{"denied", 3, reachNone, runDenied},
		{"solo", 5, reachSolo, runSolo},
		{"h2-upstream", 5, reachPool, runH2Upstream},
		{"h2-upstream-upload", 2, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runUpload(ctx, x, "/h2up", false) }},
	}
	h2Kinds = common
	h1Kinds = append(append([]kind(nil), common...),
		kind{"websocket", 4, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runWebSocket(ctx, x, false) }},
		kind{"wsmsg", 3, reachPool, func(ctx context.Context, x *exchange) (outcome, error) { return runWebSocket(ctx, x, true) }},
		kind{"connect", 3, reachNone, runConnect},
		kind{"absolute-form", 2, reachNone, runAbsolute},
		kind{"pipelined", 2, reachPool, runPipelined},
		kind{"upload-abandoned", 1, reachPool, runAbandonedUpload},
	)
}

// pick returns a kind at random by weight.
func pick(kinds []kind, rng *rand.Rand) kind {
	total := 0
	for _, k := range kinds {
		total += k.Weight
	}
	n := rng.IntN(total)
	for _, k := range kinds {
		if n < k.Weight {
			return k
		}
		n -= k.Weight
	}
	panic("unreachable")
}

// bodySize returns a body size: mostly small, sometimes up to 1 MiB,
// rarely up to 16 MiB.
func bodySize(rng *rand.Rand) int64 {
	switch n := rng.IntN(100); {
	case n < 60:
		return rng.Int64N(64 << 10)
	case n < 97:
		return rng.Int64N(1 << 20)
	default:
		return rng.Int64N(16 << 20)
	}
}

func (x *exchange) request(ctx context.Context, method, path string, body io.Reader) *http.Request {
	req, err := http.NewRequestWithContext(ctx, method, x.base+path, body)
	if err != nil {
		panic(err) // the URLs are ours
	}
	req.Header.Set("X-Request-ID", x.id)
	req.Header.Set(headerUser, x.user)
	req.Header.Set(headerIdentity, "forged-by-client") // must never reach an upstream
	return req
}

// errStatus is a response status other than the expected one.
type errStatus struct {
	got, want int
	body      string
}

func (e *errStatus) Error() string {
	return fmt.Sprintf("status %d, want %d (body %q)", e.got, e.want, e.body)
}

// errNoHead is a connection closed (or an HTTP/2 stream reset) by the
// proxy before any byte of the response head: the client sees an error,
// never something that looks like a response, so it is a clear failure;
// the report counts it apart from the statuses.
type errNoHead struct{ err error }

func (e *errNoHead) Error() string { return "closed before the response head: " + e.err.Error() }
func (e *errNoHead) Unwrap() error { return e.err }

// closedBeforeHead reports whether err, from a client's Do, is the proxy
// closing the connection or resetting the stream before the response
// head (not a dial error or a timeout, which are bad failures).
func closedBeforeHead(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "stream error: ") // net/http's HTTP/2 RST_STREAM, an unexported type
}

// do sends req and checks the response head: a 502, 503 or 504 is a clear
// failure, any other status but want a bad one. An error before the head
// is clear when the proxy closed the connection or reset the stream, bad
// otherwise. On success the caller reads and closes the body.
func do(hc *http.Client, req *http.Request, want int) (*http.Response, outcome, error) {
	res, err := hc.Do(req)
	if err != nil {
		if closedBeforeHead(err) && req.Context().Err() == nil {
			return nil, outClear, &errNoHead{err}
		}
		return nil, outBad, fmt.Errorf("before the response head: %w", err)
	}
	if res.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 200))
		res.Body.Close()
		err := &errStatus{res.StatusCode, want, string(b)}
		switch res.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return nil, outClear, err
		}
		return nil, outBad, err
	}
	return res, outOK, nil
}

// readAll reads a body: an error is an aborted response, a clear failure.
func readAll(res *http.Response) ([]byte, outcome, error) {
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return b, outClear, fmt.Errorf("response aborted after %d bytes: %w", len(b), err)
	}
	return b, outOK, nil
}

// checkIdentity checks that the upstream saw the identity the proxy's
// Authorizer set, not the one the client forged.
func (x *exchange) checkIdentity(res *http.Response) error {
	if got, want := res.Header.Get(headerIdentitySeen), "user:"+x.user; got != want {
		return fmt.Errorf("upstream saw identity %q, want %q", got, want)
	}
	return nil
}

func getSmall(ctx context.Context, x *exchange, path string, wantTarget func(string) bool) (outcome, error) {
	res, r, err := do(x.hc, x.request(ctx, http.MethodGet, path+"?id="+x.id, nil), http.StatusOK)
	if err != nil {
		return r, err
	}
	b, r, err := readAll(res)
	if err != nil {
		return r, err
	}
	if want := "small " + x.id + "\n"; string(b) != want {
		return outBad, fmt.Errorf("body %q, want %q", b, want)
	}
	if t := res.Header.Get(headerTarget); !wantTarget(t) {
		return outBad, fmt.Errorf("answered by %q", t)
	}
	if err := x.checkIdentity(res); err != nil {
		return outBad, err
	}
	return outOK, nil
}

func isPoolTarget(t string) bool { return strings.HasPrefix(t, "target-") }

func runGet(ctx context.Context, x *exchange) (outcome, error) {
	return getSmall(ctx, x, "/small", isPoolTarget)
}

func runSolo(ctx context.Context, x *exchange) (outcome, error) {
	return getSmall(ctx, x, "/solo/small", func(t string) bool { return t == "solo" })
}

func runH2Upstream(ctx context.Context, x *exchange) (outcome, error) {
	return getSmall(ctx, x, "/h2up/small", isPoolTarget)
}

// hiddenReader hides its reader's type, so that the request has no
// Content-Length and goes chunked (HTTP/1.1) or without length (HTTP/2).
type hiddenReader struct{ io.Reader }

// runUpload sends a body of a random size and checks that the upstream
// got every byte: its length and sha256.
func runUpload(ctx context.Context, x *exchange, prefix string, chunked bool) (outcome, error) {
	size := bodySize(x.rng)
	seed := x.rng.Uint64()
	h := sha256.New()
	body := io.TeeReader(io.LimitReader(newStream(seed), size), h)
	req := x.request(ctx, http.MethodPost, prefix+"/upload", hiddenReader{body})
	req.ContentLength = size
	if chunked {
		req.ContentLength = -1
	}
	res, r, err := do(x.hc, req, http.StatusOK)
	if err != nil {
		return r, fmt.Errorf("%d-byte upload: %w", size, err)
	}
	b, r, err := readAll(res)
	if err != nil {
		return r, err
	}
	if want := fmt.Sprintf("%d %x", size, h.Sum(nil)); string(b) != want {
		return outBad, fmt.Errorf("upstream got %q, want %q", b, want)
	}
	return outOK, nil
}

// runDownload fetches a body of a random size, with a Content-Length or
// without, and checks its length and sha256.
func runDownload(ctx context.Context, x *exchange) (outcome, error) {
	size := bodySize(x.rng)
	seed := x.rng.Uint64()
	cl := x.rng.IntN(2) == 0
	path := fmt.Sprintf("/download?size=%d&seed=%d", size, seed)
	if cl {
		path += "&cl=1"
	}
	res, r, err := do(x.hc, x.request(ctx, http.MethodGet, path, nil), http.StatusOK)
	if err != nil {
		return r, err
	}
	defer res.Body.Close()
	if cl && res.ContentLength != size {
		return outBad, fmt.Errorf("Content-Length %d, want %d", res.ContentLength, size)
	}
	h := sha256.New()
	n, err := io.Copy(h, res.Body)
	if err != nil {
		return outClear, fmt.Errorf("%d-byte download aborted after %d bytes: %w", size, n, err)
	}
	if n != size {
		return outBad, fmt.Errorf("download ended cleanly after %d bytes, want %d", n, size)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), streamSum(seed, size); got != want {
		return outBad, fmt.Errorf("download sha256 %s, want %s", got, want)
	}
	return outOK, nil
}

// runSSE reads a stream of server-sent events and checks every one, or
// leaves after two of them.
func runSSE(ctx context.Context, x *exchange, leave bool) (outcome, error) {
	n := 5 + x.rng.IntN(30)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res, r, err := do(x.hc, x.request(ctx, http.MethodGet, fmt.Sprintf("/events?n=%d&seed=%s", n, x.id), nil), http.StatusOK)
	if err != nil {
		return r, err
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		return outBad, fmt.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(res.Body)
	for i := range n {
		for _, want := range []string{fmt.Sprintf("id: %d", i), fmt.Sprintf("data: %s-%d", x.id, i), ""} {
			line, err := readLine(br)
			if err != nil {
				return outClear, fmt.Errorf("stream aborted at event %d of %d: %w", i, n, err)
			}
			if line != want {
				return outBad, fmt.Errorf("event %d: line %q, want %q", i, line, want)
			}
		}
		if leave && i == 1 {
			return outAbandoned, nil
		}
	}
	if b, err := br.ReadByte(); err != io.EOF {
		if err != nil {
			return outClear, fmt.Errorf("stream aborted after its last event: %w", err)
		}
		return outBad, fmt.Errorf("byte %q after the last event", b)
	}
	return outOK, nil
}

func runCapture(ctx context.Context, x *exchange) (outcome, error) {
	k := x.rng.IntN(1000)
	res, r, err := do(x.hc, x.request(ctx, http.MethodGet, fmt.Sprintf("/capture/json?n=%d", k), nil), http.StatusOK)
	if err != nil {
		return r, err
	}
	b, r, err := readAll(res)
	if err != nil {
		return r, err
	}
	var v struct {
		Captured bool
		Double   int
		Target   string
	}
	if err := json.Unmarshal(b, &v); err != nil || !v.Captured || v.Double != 2*k || !strings.HasPrefix(v.Target, "TARGET-") {
		return outBad, fmt.Errorf("captured body %q (%v) for n=%d", b, err, k)
	}
	if res.ContentLength != int64(len(b)) {
		return outBad, fmt.Errorf("Content-Length %d for a %d-byte transformed body", res.ContentLength, len(b))
	}
	return outOK, nil
}

func runLocal(ctx context.Context, x *exchange) (outcome, error) {
	res, r, err := do(x.hc, x.request(ctx, http.MethodGet, "/status", nil), http.StatusOK)
	if err != nil {
		return r, err
	}
	b, r, err := readAll(res)
	if err != nil {
		return r, err
	}
	if string(b) != "proxy ok\n" {
		return outBad, fmt.Errorf("status body %q", b)
	}
	return outOK, nil
}

func runDenied(ctx context.Context, x *exchange) (outcome, error) {
	req := x.request(ctx, http.MethodGet, "/small?id="+x.id, nil)
	req.Header.Set(headerDeny, "1")
	res, _, err := do(x.hc, req, http.StatusForbidden)
	if err != nil {
		return outBad, err // the Authorizer answers without any upstream: never a clear failure
	}
	b, r, err := readAll(res)
	if err != nil {
		return r, err
	}
	if want := "denied by the soak's Authorizer\n"; string(b) != want || res.Header.Get(headerTarget) != "" {
		return outBad, fmt.Errorf("denial %q from %q", b, res.Header.Get(headerTarget))
	}
	return outOK, nil
}

// runWebSocket opens a WebSocket to the echo upstream, through the
// transparent tunnel or through wsmsg's message relay (which drops the
// client's "drop:" messages), and checks every echo.
func runWebSocket(ctx context.Context, x *exchange, relay bool) (outcome, error) {
	path := "/ws"
	if relay {
		path = "/wsmsg/ws"
	}
	var status int
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		Header:  ws.HandshakeHeaderHTTP(http.Header{"X-Request-ID": {x.id}, headerUser: {x.user}}),
		OnStatusError: func(s int, _ []byte, _ io.Reader) {
			status = s
		},
	}
	conn, br, _, err := d.Dial(ctx, "ws://"+x.c.proxy+path)
	if err != nil {
		switch status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return outClear, fmt.Errorf("upgrade refused: %w", err)
		case 0:
			if closedBeforeHead(err) && ctx.Err() == nil {
				return outClear, &errNoHead{err}
			}
		}
		return outBad, fmt.Errorf("upgrade: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var rd io.Reader = conn
	if br != nil {
		rd = io.MultiReader(br, conn)
	}
	peer := struct {
		io.Reader
		io.Writer
	}{rd, conn}
	n := 1 + x.rng.IntN(20)
	for i := range n {
		if relay && i%4 == 1 {
			if err := wsutil.WriteClientText(conn, []byte("drop:"+x.id)); err != nil {
				return outClear, fmt.Errorf("session aborted at message %d: %w", i, err)
			}
		}
		msg := make([]byte, x.rng.IntN(16<<10))
		for j := range msg {
			msg[j] = 'a' + byte(x.rng.IntN(26))
		}
		msg = append(msg, fmt.Sprintf(" %s %d", x.id, i)...)
		if err := wsutil.WriteClientText(conn, msg); err != nil {
			return outClear, fmt.Errorf("session aborted at message %d: %w", i, err)
		}
		got, _, err := wsutil.ReadServerData(peer)
		if err != nil {
			return outClear, fmt.Errorf("session aborted at message %d of %d: %w", i, n, err)
		}
		if string(got) != string(msg) {
			return outBad, fmt.Errorf("echo %d: %d bytes ending %q, want %d ending %q", i, len(got), tail(got), len(msg), tail(msg))
		}
	}
	// A clean close: our close frame, the peer's answer, the end.
	if err := ws.WriteFrame(conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))); err != nil {
		return outClear, fmt.Errorf("closing: %w", err)
	}
	_, _, err = wsutil.ReadServerData(peer)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) {
		return outClear, fmt.Errorf("waiting for the close frame: %v", err)
	}
	if ce.Code != ws.StatusNormalClosure {
		return outClear, fmt.Errorf("closed with %d %q", ce.Code, ce.Reason)
	}
	return outOK, nil
}

func tail(b []byte) string {
	if len(b) > 20 {
		b = b[len(b)-20:]
	}
	return string(b)
}

// runConnect opens a CONNECT tunnel to the origin and makes a request
// through it.
func runConnect(ctx context.Context, x *exchange) (outcome, error) {
	conn, err := dialProxy(ctx, x)
	if err != nil {
		return outBad, err
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nX-Request-ID: %s\r\n\r\n", x.c.origin, x.c.origin, x.id)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return outBad, fmt.Errorf("CONNECT: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return outBad, fmt.Errorf("CONNECT: status %d", res.StatusCode)
	}
	fmt.Fprintf(conn, "GET /origin/small?id=%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", x.id, x.c.origin)
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		return outBad, fmt.Errorf("through the tunnel: %w", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK || string(b) != "small "+x.id+"\n" {
		return outBad, fmt.Errorf("through the tunnel: status %d body %q err %v", res.StatusCode, b, err)
	}
	return outOK, nil
}

// runAbsolute makes an absolute-form request (forward proxying) to the
// origin.
func runAbsolute(ctx context.Context, x *exchange) (outcome, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+x.c.origin+"/origin/small?id="+x.id, nil)
	req.Header.Set("X-Request-ID", x.id)
	res, _, err := do(x.c.forward, req, http.StatusOK)
	if err != nil {
		return outBad, err
	}
	b, _, err := readAll(res)
	if err != nil || string(b) != "small "+x.id+"\n" || res.Header.Get(headerTarget) != "origin" {
		return outBad, fmt.Errorf("absolute-form: body %q from %q, err %v", b, res.Header.Get(headerTarget), err)
	}
	return outOK, nil
}

// dialProxy opens a raw connection to the proxy's plain listener, bounded
// by the exchange's deadline.
func dialProxy(ctx context.Context, x *exchange) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", x.c.proxy)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return conn, nil
}

// runPipelined sends two requests in one write on a new connection and
// reads both answers, in order.
func runPipelined(ctx context.Context, x *exchange) (outcome, error) {
	conn, err := dialProxy(ctx, x)
	if err != nil {
		return outBad, err
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /small?id=%s-a HTTP/1.1\r\nHost: soak\r\nX-Soak-User: %s\r\n\r\n"+
		"GET /small?id=%s-b HTTP/1.1\r\nHost: soak\r\nX-Soak-User: %s\r\nConnection: close\r\n\r\n", x.id, x.user, x.id, x.user)
	br := bufio.NewReader(conn)
	for _, part := range []string{"a", "b"} {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return outBad, fmt.Errorf("pipelined %s: %w", part, err)
		}
		if res.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(res.Body)
			err := &errStatus{res.StatusCode, 200, string(b)}
			if res.StatusCode == http.StatusBadGateway || res.StatusCode == http.StatusServiceUnavailable || res.StatusCode == http.StatusGatewayTimeout {
				return outClear, fmt.Errorf("pipelined %s: %w", part, err)
			}
			return outBad, fmt.Errorf("pipelined %s: %w", part, err)
		}
		b, r, err := readAll(res)
		if err != nil {
			return r, err
		}
		if want := "small " + x.id + "-" + part + "\n"; string(b) != want {
			return outBad, fmt.Errorf("pipelined %s: body %q, want %q", part, b, want)
		}
	}
	return outOK, nil
}

// runAbandonedUpload starts an upload and goes away half way.
func runAbandonedUpload(ctx context.Context, x *exchange) (outcome, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", x.c.proxy)
	if err != nil {
		return outBad, err
	}
	defer conn.Close()
	size := 1 + x.rng.IntN(1<<20)
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: soak\r\nX-Request-ID: %s\r\nContent-Length: %d\r\n\r\n", x.id, size)
	io.Copy(conn, io.LimitReader(newStream(1), int64(x.rng.IntN(size))))
	return outAbandoned, nil
}

// parseCert returns a pool holding the PEM certificate.
func parseCert(pem []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, errors.New("no certificate in the PEM")
	}
	return p, nil
}
