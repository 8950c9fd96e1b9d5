package balance

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/urlpath"
)

// HealthCheck configures a Pool's active health checks: every Interval
// (with jitter, so that many proxies do not probe in step), each member
// gets a GET for Path. Fall failures in a row take a target out; Rise
// successes in a row bring it back. Checks of one round run concurrently,
// at most 16 at a time.
type HealthCheck struct {
	// Path is requested on each target, joined to the target's own path.
	// If empty, "/".
	Path string

	// Interval is the time between two rounds of checks.
	// If zero, 5 seconds.
	Interval time.Duration

	// Timeout bounds one check, connection included. If zero, 2 seconds
	// or Interval, whichever is shorter.
	Timeout time.Duration

	// Jitter is the fraction of Interval by which each round is randomly
	// advanced or delayed, and within which each target's check is
	// spread. If zero, 0.1; if negative, none.
	Jitter float64

	// Status is the status a healthy target answers. If zero, any 2xx or
	// 3xx status.
	Status int

	// Rise is the number of consecutive successful checks after which a
	// down target is healthy again. If zero, 2.
	Rise int

	// Fall is the number of consecutive failed checks after which a
	// target is down. If zero, 3.
	Fall int

	// Header is added to each check request (for instance a Host or an
	// authorization header the target requires).
	Header http.Header

	// Transport sends the checks. If nil, a dedicated transport with
	// Timeout as dial timeout and no proxy from the environment, whose
	// idle connections are closed when Run returns; it checks h2c://
	// targets over HTTP/2 with prior knowledge and unix: targets through
	// their socket (a request whose URL has the scheme "unix" and the
	// socket's path as its host, which a Transport set here gets).
	Transport http.RoundTripper
}

func (h *HealthCheck) interval() time.Duration {
	if h.Interval > 0 {
		return h.Interval
	}
	return 5 * time.Second
}

func (h *HealthCheck) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return min(2*time.Second, h.interval())
}

func (h *HealthCheck) jitter() float64 {
	switch {
	case h.Jitter < 0:
		return 0
	case h.Jitter == 0:
		return 0.1
	}
	return min(h.Jitter, 1)
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// PassiveHealth configures a Pool's passive health: when a target has
// Failures failed attempts within Window, it is taken out of rotation for
// CoolDown, after which it gets requests again (and is taken out again at
// the next Failures failures). A failed attempt is one that got no
// response (connection refused or reset, timeout, malformed response) or
// whose response body broke off, and, with ServerErrors, one answered
// with a 5xx status. A client that goes away is not a failure.
type PassiveHealth struct {
	// Failures within Window that take a target out. If zero, 5; if
	// negative, passive health is off.
	Failures int

	// Window is the time within which Failures must occur.
	// If zero, 10 seconds.
	Window time.Duration

	// CoolDown is how long a target stays out. If zero, 10 seconds.
	CoolDown time.Duration

	// ServerErrors counts responses with a 5xx status as failures.
	ServerErrors bool
}

var defaultPassive PassiveHealth

func (p *Pool) passive() *PassiveHealth {
	if p.Passive != nil {
		return p.Passive
	}
	return &defaultPassive
}

// passiveFailure records a failed attempt of u and takes u out for the
// cool-down when the threshold is reached within the window.
func (p *Pool) passiveFailure(u *Upstream) {
	cfg := p.passive()
	if cfg.Failures < 0 {
		return
	}
	n := orDefault(cfg.Failures, 5)
	window := cfg.Window
	if window <= 0 {
		window = 10 * time.Second
	}
	cool := cfg.CoolDown
	if cool <= 0 {
		cool = 10 * time.Second
	}
	now := p.now()
	u.mu.Lock()
	if len(u.fails) != n {
		u.fails, u.failNext = make([]int64, n), 0
	}
	u.fails[u.failNext] = now
	u.failNext = (u.failNext + 1) % n
	oldest := u.fails[u.failNext] // the n-th most recent failure
	trip := oldest != 0 && now-oldest <= int64(window) && u.passiveUntil.Load() <= now
	if trip {
		u.passiveUntil.Store(now + int64(cool))
		clear(u.fails)
	}
	u.mu.Unlock()
	if !trip {
		return
	}
	p.logger().Warn("balance: target down (passive)", "id", u.id, "failures", n, "window", window, "cool_down", cool)
	p.rebuild()
	p.publish(u.id, cool)
	time.AfterFunc(cool, func() {
		if u.passiveUntil.Load() <= p.now() {
			p.logger().Info("balance: target back (passive cool-down over)", "id", u.id, "cool_down", cool)
		}
		p.rebuild()
	})
}

// runHealth runs rounds of active checks until ctx is done.
func (p *Pool) runHealth(ctx context.Context) {
	hc := p.Health
	rt := hc.Transport
	if rt == nil {
		t := newHealthTransport(hc.timeout(), 2*hc.interval())
		defer t.CloseIdleConnections()
		rt = t
	}
	client := &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for {
		p.checkRound(ctx, client)
		d := hc.interval()
		if j := hc.jitter(); j > 0 {
			d += time.Duration((rand.Float64()*2 - 1) * j * float64(d))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// checkRound checks every member once and rebuilds the snapshot if a
// target changed state.
func (p *Pool) checkRound(ctx context.Context, client *http.Client) {
	hc := p.Health
	members := p.state.Load().members
	spread := time.Duration(hc.jitter() * float64(hc.interval()))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	changed := false
	for _, u := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if spread > 0 {
				t := time.NewTimer(rand.N(spread))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			why := p.check(ctx, client, u)
			<-sem
			if ctx.Err() != nil {
				return
			}
			if p.recordCheck(u, why) {
				mu.Lock()
				changed = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if changed {
		p.rebuild()
	}
}

// check sends one health check to u. It returns "" if u is healthy,
// else what the check got.
func (p *Pool) check(ctx context.Context, client *http.Client, u *Upstream) string {
	hc := p.Health
	ctx, cancel := context.WithTimeout(ctx, hc.timeout())
	defer cancel()
	target := *u.url
	path := u.health
	if path == "" {
		path = hc.Path
	}
	if path == "" {
		path = "/"
	}
	target.Path = urlpath.Join(u.url.Path, path)
	target.RawPath = ""
	if target.Scheme == "unix" {
		// A URL cannot spell a socket path as its host: the request is
		// made for http://localhost and pointed at the socket after.
		target = url.URL{Scheme: "http", Host: unixHost, Path: path}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return "GET " + path + ": " + err.Error()
	}
	if u.url.Scheme == "unix" {
		req.URL.Scheme, req.URL.Host = "unix", unixSocket(u.url)
	}
	for k, vv := range hc.Header {
		req.Header[k] = vv
	}
	if h := hc.Header.Get("Host"); h != "" {
		req.Host = h
	}
	req.Header.Set("User-Agent", "sluice-health-check")
	res, err := client.Do(req)
	if err != nil {
		return "GET " + path + ": " + err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
	res.Body.Close()
	ok := res.StatusCode >= 200 && res.StatusCode <= 399
	if hc.Status != 0 {
		ok = res.StatusCode == hc.Status
	}
	if !ok {
		return "GET " + path + ": " + res.Status
	}
	return ""
}

// recordCheck applies a check result (see check) to u's rise/fall
// counters and reports whether u changed state.
func (p *Pool) recordCheck(u *Upstream, why string) bool {
	hc := p.Health
	rise, fall := orDefault(hc.Rise, 2), orDefault(hc.Fall, 3)
	u.mu.Lock()
	defer u.mu.Unlock()
	down := u.activeDown.Load()
	if why == "" {
		u.failRun = 0
		u.okRun++
		if down && u.okRun >= rise {
			u.activeDown.Store(false)
			p.logger().Info("balance: target up (active)", "id", u.id)
			if u.marked {
				u.marked = false
				p.publish(u.id, 0)
			}
			return true
		}
		return false
	}
	u.okRun = 0
	u.failRun++
	u.failWhy = why
	if down {
		// Keep the shared mark alive while the target stays down.
		if u.marked {
			p.publish(u.id, p.activeMarkTTL())
		}
		return false
	}
	if u.failRun >= fall {
		u.activeDown.Store(true)
		u.marked = true
		p.publish(u.id, p.activeMarkTTL())
		p.logger().Warn("balance: target down (active)", "id", u.id, "failures", u.failRun, "reason", why)
		return true
	}
	return false
}

// activeMarkTTL is how long a down mark from an active check lasts: it is
// refreshed every round, and vanishes if this instance stops.
func (p *Pool) activeMarkTTL() time.Duration {
	return 3 * p.Health.interval()
}

// healthTransport is the default transport of active health checks: an
// http.Transport for http:// and https:// targets, HTTP/2 with prior
// knowledge for h2c:// ones, and a dial of the socket for unix: ones
// (whose request URL has the socket's path as its host).
type healthTransport struct {
	tcp, h2c, unix *http.Transport
}

type socketKey struct{}

func newHealthTransport(timeout, idle time.Duration) *healthTransport {
	d := &net.Dialer{Timeout: timeout}
	mk := func() *http.Transport {
		return &http.Transport{
			DialContext:           d.DialContext,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       idle,
		}
	}
	t := &healthTransport{tcp: mk(), h2c: mk(), unix: mk()}
	t.h2c.Protocols = new(http.Protocols)
	t.h2c.Protocols.SetUnencryptedHTTP2(true)
	// Connections are not pooled: they would be shared by every socket
	// behind the one host name the requests carry.
	t.unix.DisableKeepAlives = true
	t.unix.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		path, _ := ctx.Value(socketKey{}).(string)
		return d.DialContext(ctx, "unix", path)
	}
	return t
}

func (t *healthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.URL.Scheme {
	case "h2c":
		r := req.Clone(req.Context())
		r.URL.Scheme = "http"
		return t.h2c.RoundTrip(r)
	case "unix":
		r := req.Clone(context.WithValue(req.Context(), socketKey{}, req.URL.Host))
		r.URL.Scheme, r.URL.Host = "http", unixHost
		return t.unix.RoundTrip(r)
	}
	return t.tcp.RoundTrip(req)
}

func (t *healthTransport) CloseIdleConnections() {
	t.tcp.CloseIdleConnections()
	t.h2c.CloseIdleConnections()
}
