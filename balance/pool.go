package balance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/urlpath"
)

// Pool is a sluice.Director that spreads requests over a dynamic set of
// upstream targets with a Policy, keeps them healthy with active and
// passive checks, and records per-target statistics. It implements
// sluice.Observer, so the Proxy tells it how every attempt ended.
//
// Membership lives in a Registry (in memory unless Registry is set, for
// instance to a store shared by several proxy instances); Add, Register,
// Remove and the registration handler (see Registrar) change it at run
// time. The pick path takes no lock: it reads an immutable snapshot that
// is replaced (copy on write) when membership or health changes, and
// updates per-target atomic counters.
//
// On a retry (see sluice.RetryPolicy) the Pool picks a target that the
// request has not tried yet when there is one. When no target is
// healthy, Direct returns sluice.ErrNoUpstream and the client gets 503
// Service Unavailable with a Retry-After header.
//
// The zero value is an empty pool using round-robin. Fields must not be
// changed after the first call to a method. Run must be running for
// active health checks, registration expiry and, with a shared Registry,
// for changes made by other instances to be seen.
type Pool struct {
	// Policy chooses the target of each request among the healthy ones.
	// If nil, RoundRobin().
	Policy Policy

	// Registry stores the membership. If nil, the Pool uses a
	// MemoryRegistry of its own.
	Registry Registry

	// Health configures active health checks, run by Run.
	// If nil, there are none: targets are healthy until passive checks
	// say otherwise.
	Health *HealthCheck

	// Passive configures passive health: failed attempts within a window
	// take a target out for a cool-down. If nil, the defaults of
	// PassiveHealth are used; set Failures to -1 to turn it off.
	Passive *PassiveHealth

	// SyncInterval is how often Run reloads the membership from the
	// Registry (expiring registrations, seeing other instances' changes).
	// If zero, one second.
	SyncInterval time.Duration

	// StripPrefix is a path prefix removed from the request path before
	// the target's path is joined in front of it, as http.StripPrefix
	// removes its prefix: with "/app", "/app/users" reaches a target
	// http://10.0.0.1:8080/v2 as "/v2/users", and "/app" reaches it as
	// "/v2/". The prefix matches at a segment boundary ("/app" does not
	// match "/application"; a trailing slash is ignored) and a path
	// outside it is forwarded unchanged. It is matched against and
	// removed from the escaped path (write "/a%20b" for "/a b"), so that
	// an encoded slash is never decoded on the way ("/app%2Fx" is not
	// under "/app"). If empty, paths are forwarded unchanged.
	StripPrefix string

	// PreserveHost keeps the client's Host header on the outbound
	// request. If false, the Host header is the target's host (as
	// sluice.ProxyRequest.SetURL sets it).
	PreserveHost bool

	// Logger receives membership and health changes. If nil,
	// slog.Default() is used.
	Logger *slog.Logger

	initOnce sync.Once
	pol      Policy
	reg      Registry
	epoch    time.Time
	marks    chan downMark

	running    atomic.Bool // Run is running
	warnedIdle atomic.Bool // the warning that Run is not running was logged

	syncMu sync.Mutex // serializes Syncs: a load applied after a newer one would undo it

	mu    sync.Mutex           // serializes changes of ups and state
	ups   map[string]*Upstream // by host: members and draining ex-members
	state atomic.Pointer[poolState]
}

// runGrace is how long a Pool with Health serves before it warns that Run
// is not running (a program starts Run right before serving).
const runGrace = 5 * time.Second

// Member is one target as a Registry stores it.
type Member struct {
	// ID names the member; if empty, URL is used.
	ID string `json:"id"`
	// URL is the target: scheme (http, https, or h2c for HTTP/2 with
	// prior knowledge), host and port, and an optional path joined in
	// front of request paths; or unix:///path/to/socket for an
	// HTTP/1.1 upstream on a Unix-domain socket (not through Registrar,
	// which refuses it).
	URL string `json:"url"`
	// Weight is the target's share for weighted policies. If zero, 1.
	Weight int `json:"weight,omitempty"`
	// Down is set by Registry.Members while a down mark (see
	// Registry.MarkDown) is in force for the member.
	Down bool `json:"down,omitempty"`
	// HealthPath, if not empty, is the path the active health checks
	// request on this target instead of HealthCheck.Path: an absolute
	// path without query, at most 256 bytes.
	HealthPath string `json:"health_path,omitempty"`
}

// MaxWeight is the largest Member.Weight; larger weights are clamped.
const MaxWeight = 1000

// unixHost is the Host header the engine sends to a unix: target whose
// Director left it empty; health checks send it too.
const unixHost = "localhost"

// unixSocket returns the socket path of a unix: target ("unix:///a.sock"
// parses with it as the path; an outbound request has it as its host),
// which names the target in Result.Upstream and Tried.
func unixSocket(u *url.URL) string {
	if u.Host != "" {
		return u.Host
	}
	return u.Path
}

// normalize checks m and fills its defaults. It returns the parsed URL.
func (m *Member) normalize() (*url.URL, error) {
	u, err := url.Parse(m.URL)
	if err != nil {
		return nil, fmt.Errorf("balance: member url: %w", err)
	}
	switch u.Scheme {
	case "http", "https", "h2c", "unix":
	default:
		return nil, fmt.Errorf("balance: member url %q: scheme must be http, https, h2c or unix", m.URL)
	}
	if u.Scheme == "unix" {
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("balance: member url %q: want unix:///path/to/socket", m.URL)
		}
		for i := 0; i < len(u.Path); i++ {
			if c := u.Path[i]; c < ' ' || c == 0x7f {
				return nil, fmt.Errorf("balance: member url %q: invalid socket path", m.URL)
			}
		}
	} else {
		if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("balance: member url %q: want scheme://host[:port][/path]", m.URL)
		}
		for i := 0; i < len(u.Host); i++ {
			if c := u.Host[i]; c <= ' ' || c == 0x7f {
				return nil, fmt.Errorf("balance: member url %q: invalid host", m.URL)
			}
		}
	}
	if m.ID == "" {
		m.ID = m.URL
	}
	if len(m.ID) > 256 {
		return nil, errors.New("balance: member id longer than 256 bytes")
	}
	switch {
	case m.Weight < 0:
		return nil, fmt.Errorf("balance: member weight %d is negative", m.Weight)
	case m.Weight == 0:
		m.Weight = 1
	case m.Weight > MaxWeight:
		m.Weight = MaxWeight
	}
	if err := checkHealthPath(m.HealthPath); err != nil {
		return nil, err
	}
	return u, nil
}

// checkHealthPath accepts "" or an absolute path without query, fragment,
// backslash, space or control byte.
func checkHealthPath(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' || len(p) > 256 {
		return fmt.Errorf("balance: member health path %q: want an absolute path of at most 256 bytes", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' || c == '\\' {
			return fmt.Errorf("balance: member health path %q: no query, fragment, backslash, space or control byte", p)
		}
	}
	return nil
}

// Upstream is one target of a Pool as its Policy sees it. It is safe for
// concurrent use; its counters are updated atomically.
//
// A Pool has at most one member per host:port (sluice.Result.Upstream
// names attempts by host), and the counters and health of a host survive
// a change of the member's ID, path or weight.
type Upstream struct {
	id     string
	url    *url.URL
	host   string // url.Host, as in sluice.Result.Upstream
	weight int
	health string // Member.HealthPath
	member bool   // guarded by Pool.mu
	left   int64  // when it stopped being a member, Pool clock; guarded by Pool.mu

	*hostState
}

// hostState is the part of an Upstream shared by every version of the
// member for one host, so that attempts directed by an older snapshot
// are counted where newer ones are.
type hostState struct {
	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	latency  atomic.Int64 // sum of observed attempt durations, ns
	observed atomic.Uint64

	activeDown   atomic.Bool // set by active checks
	sharedDown   atomic.Bool // a down mark in the Registry
	passiveUntil atomic.Int64

	mu       sync.Mutex // guards the fields below
	fails    []int64    // ring of recent failure times, Pool clock
	failNext int
	okRun    int    // consecutive successful active checks
	failRun  int    // consecutive failed active checks
	failWhy  string // what the last failed active check got
	marked   bool
}

// ID returns the member ID of the target.
func (u *Upstream) ID() string { return u.id }

// URL returns the target URL. The caller must not modify it.
func (u *Upstream) URL() *url.URL { return u.url }

// Weight returns the target's weight, at least 1.
func (u *Upstream) Weight() int { return u.weight }

// InFlight returns the number of attempts sent to the target whose
// response has not ended yet.
func (u *Upstream) InFlight() int64 { return u.inflight.Load() }

func (u *Upstream) healthy(now int64) bool {
	return !u.activeDown.Load() && !u.sharedDown.Load() && u.passiveUntil.Load() <= now
}

// Stats is a snapshot of one target's counters, as Pool.Stats returns
// them and Pool.Handler serves them (JSON).
type Stats struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Weight int    `json:"weight"`
	// Healthy reports whether the target gets requests: it is in the
	// snapshot the Policy picks from (a member that neither active nor
	// passive health, nor a shared down mark, keeps out).
	Healthy bool `json:"healthy"`
	// Member is false for a removed target that still has attempts in
	// flight (draining).
	Member bool `json:"member"`
	// Requests counts attempts directed to the target, retries included.
	Requests uint64 `json:"requests"`
	// Failures counts attempts that failed (see PassiveHealth).
	Failures uint64 `json:"failures"`
	// InFlight counts attempts sent to the target whose response has not
	// ended yet.
	InFlight int64 `json:"in_flight"`
	// Latency is the mean duration of the attempts that ended, from
	// sending the request to the end of the response body.
	Latency time.Duration `json:"latency_ns"`
	// DownReason says why a member is not healthy (the failed active
	// check, the passive take-out or the shared down mark); empty when
	// it is.
	DownReason string `json:"down_reason,omitempty"`
}

// drainGrace is how long a removed target's counters are kept after its
// last attempt ended, so that a re-added target keeps them and no attempt
// counts itself on a forgotten target.
const drainGrace = time.Minute

// poolState is an immutable snapshot read by the pick path.
type poolState struct {
	members []*Upstream          // current members, by ID
	healthy []*Upstream          // healthy members, by ID
	byHost  map[string]*Upstream // members and draining ex-members
	picker  Picker               // over healthy; nil when none
	gen     uint64
}

func (p *Pool) init() {
	p.initOnce.Do(func() {
		p.pol = p.Policy
		if p.pol == nil {
			p.pol = RoundRobin()
		}
		p.reg = p.Registry
		if p.reg == nil {
			p.reg = &MemoryRegistry{}
		}
		p.epoch = time.Now()
		p.marks = make(chan downMark, 64)
		p.ups = make(map[string]*Upstream)
		p.state.Store(&poolState{byHost: map[string]*Upstream{}})
	})
}

// now returns the Pool clock: monotonic nanoseconds since the Pool began.
func (p *Pool) now() int64 { return int64(time.Since(p.epoch)) }

func (p *Pool) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

func (p *Pool) policy() Policy { return p.pol }

// Add adds m to the pool for good (until Remove), or replaces the member
// with m's ID, making it permanent. The change is visible to this Pool's
// next request when Add returns.
func (p *Pool) Add(ctx context.Context, m Member) error {
	return p.put(ctx, m, 0)
}

// Register adds m to the pool for ttl, or replaces the member with m's
// ID and renews it for ttl: a registration that expires unless Register
// is called again within ttl (a heartbeat; see Registrar). Expiry is
// applied by Run. ttl must be positive; a member that never expires is
// added with Add. The change is visible to this Pool's next request when
// Register returns.
func (p *Pool) Register(ctx context.Context, m Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("balance: registering %q: ttl %v is not positive (Add adds a member without expiry)", m.URL, ttl)
	}
	return p.put(ctx, m, ttl)
}

// put stores m in the Registry with ttl (0: no expiry) and syncs.
func (p *Pool) put(ctx context.Context, m Member, ttl time.Duration) error {
	p.init()
	if _, err := m.normalize(); err != nil {
		return err
	}
	m.Down = false
	if err := p.reg.Put(ctx, m, ttl); err != nil {
		return fmt.Errorf("balance: registering %s: %w", m.ID, err)
	}
	return p.Sync(ctx)
}

// Remove removes the member with the given ID. Attempts in flight to it
// complete; no new request is sent to it.
func (p *Pool) Remove(ctx context.Context, id string) error {
	p.init()
	if err := p.reg.Delete(ctx, id); err != nil {
		return fmt.Errorf("balance: removing %s: %w", id, err)
	}
	return p.Sync(ctx)
}

// Sync reloads the membership from the Registry now. Run calls it every
// SyncInterval.
func (p *Pool) Sync(ctx context.Context) error {
	p.init()
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	ms, err := p.reg.Members(ctx)
	if err != nil {
		return fmt.Errorf("balance: loading pool members: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[string]string, len(ms)) // host -> ID
	for _, m := range ms {
		u, err := m.normalize()
		if err != nil {
			p.logger().Warn("balance: ignoring invalid member", "id", m.ID, "err", err)
			continue
		}
		host := u.Host // what an attempt's Result.Upstream names
		if u.Scheme == "unix" {
			host = unixSocket(u)
		}
		if other, dup := seen[host]; dup {
			if other != m.ID {
				p.logger().Warn("balance: ignoring member for a host already in the pool", "id", m.ID, "host", host, "member", other)
			}
			continue
		}
		seen[host] = m.ID
		cur := p.ups[host]
		switch {
		case cur == nil:
			p.logger().Info("balance: target added", "id", m.ID, "url", m.URL)
			cur = &Upstream{id: m.ID, url: u, host: host, weight: m.Weight, health: m.HealthPath, hostState: new(hostState)}
			p.ups[host] = cur
		case cur.id != m.ID || cur.url.String() != u.String() || cur.weight != m.Weight || cur.health != m.HealthPath:
			if !cur.member {
				p.logger().Info("balance: target added", "id", m.ID, "url", m.URL)
			}
			cur = &Upstream{id: m.ID, url: u, host: host, weight: m.Weight, health: m.HealthPath, hostState: cur.hostState}
			p.ups[host] = cur
		case !cur.member:
			p.logger().Info("balance: target added", "id", m.ID, "url", m.URL)
		}
		cur.member = true
		cur.sharedDown.Store(m.Down)
	}
	for host, u := range p.ups {
		if _, ok := seen[host]; !ok && u.member {
			u.member, u.left = false, p.now()
			p.logger().Info("balance: target removed", "id", u.id, "url", u.url.String())
		}
	}
	p.rebuildLocked()
	return nil
}

// rebuild replaces the snapshot after a health change.
func (p *Pool) rebuild() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rebuildLocked()
}

func (p *Pool) rebuildLocked() {
	now := p.now()
	old := p.state.Load()
	st := &poolState{byHost: make(map[string]*Upstream, len(p.ups)), gen: old.gen + 1}
	for host, u := range p.ups {
		if !u.member {
			// An ex-member is kept while attempts are in flight, and a
			// while longer: a request that picked it from an older
			// snapshot counts itself in only after the pick.
			if u.inflight.Load() <= 0 && now-u.left > int64(drainGrace) {
				delete(p.ups, host)
				continue
			}
		} else {
			st.members = append(st.members, u)
		}
		st.byHost[host] = u
	}
	slices.SortFunc(st.members, func(a, b *Upstream) int { return strings.Compare(a.id, b.id) })
	for _, u := range st.members {
		if u.healthy(now) {
			st.healthy = append(st.healthy, u)
		}
	}
	if old.picker != nil && slices.Equal(st.healthy, old.healthy) {
		st.picker = old.picker
	} else if len(st.healthy) > 0 {
		st.picker = p.policy().Picker(st.healthy)
	}
	if !slices.Equal(st.healthy, old.healthy) {
		p.logger().Debug("balance: healthy targets changed", "healthy", len(st.healthy), "members", len(st.members))
	}
	p.state.Store(st)
}

// Direct implements sluice.Director: it points the outbound request at a
// healthy target chosen by the Policy, avoiding the targets the request
// already tried when it can.
func (p *Pool) Direct(pr *sluice.ProxyRequest) error {
	p.init()
	if p.Health != nil && !p.running.Load() && !p.warnedIdle.Load() && time.Since(p.epoch) > runGrace && p.warnedIdle.CompareAndSwap(false, true) {
		p.logger().Warn("balance: Health is set but Run is not running: no active health checks (call go pool.Run(ctx))")
	}
	st := p.state.Load()
	if st.picker == nil {
		pr.ResponseHeader().Set("Retry-After", strconv.Itoa(p.retryAfter(st)))
		return sluice.ErrNoUpstream
	}
	u := st.picker.Pick(pr)
	if u == nil {
		pr.ResponseHeader().Set("Retry-After", strconv.Itoa(p.retryAfter(st)))
		return sluice.ErrNoUpstream
	}
	if pr.Attempt() > 0 && slices.Contains(pr.Tried(), u.host) {
		u = untried(st.healthy, u, pr.Tried())
	}
	if p.StripPrefix != "" && urlpath.HasPrefix(pr.Out.URL.EscapedPath(), strings.TrimSuffix(p.StripPrefix, "/")) {
		urlpath.StripPrefix(pr.Out.URL, p.StripPrefix)
	}
	pr.SetURL(u.url)
	if p.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	u.requests.Add(1)
	u.inflight.Add(1)
	return nil
}

// untried returns the first healthy target after u (in ID order) that is
// not in tried, or u when all were tried.
func untried(healthy []*Upstream, u *Upstream, tried []string) *Upstream {
	i := slices.Index(healthy, u)
	for k := 1; k < len(healthy); k++ {
		c := healthy[(i+k)%len(healthy)]
		if !slices.Contains(tried, c.host) {
			return c
		}
	}
	return u
}

// retryAfter is the Retry-After value, in seconds, when no target is
// healthy: the time until the first passive cool-down ends, or the active
// check interval, within [1, 60].
func (p *Pool) retryAfter(st *poolState) int {
	now := p.now()
	var wait time.Duration
	for _, u := range st.members {
		if until := u.passiveUntil.Load(); until > now && !u.activeDown.Load() && !u.sharedDown.Load() {
			if d := time.Duration(until - now); wait == 0 || d < wait {
				wait = d
			}
		}
	}
	if wait == 0 && p.Health != nil {
		wait = p.Health.interval()
	}
	secs := int((wait + time.Second - 1) / time.Second)
	return min(max(secs, 1), 60)
}

// Observe implements sluice.Observer: it updates the target's counters
// and its passive health.
func (p *Pool) Observe(pr *sluice.ProxyRequest, res sluice.Result) {
	p.init()
	u := p.state.Load().byHost[res.Upstream]
	if u == nil {
		return
	}
	u.inflight.Add(-1)
	u.latency.Add(int64(res.Duration))
	u.observed.Add(1)
	if p.failed(res) {
		u.failures.Add(1)
		p.passiveFailure(u)
	}
}

// failed reports whether an attempt counts against its target. A client
// that went away or sent a bad body is not the target's fault.
func (p *Pool) failed(res sluice.Result) bool {
	if res.Err != nil {
		if errors.Is(res.Err, context.Canceled) {
			return false
		}
		s := sluice.StatusFor(res.Err)
		return s == http.StatusBadGateway || s == http.StatusGatewayTimeout
	}
	return p.passive().ServerErrors && res.Status >= 500 && res.Status <= 599
}

// Stats returns a snapshot of the counters of every member and of removed
// targets that still have attempts in flight, ordered by ID.
func (p *Pool) Stats() []Stats {
	p.init()
	st := p.state.Load()
	out := make([]Stats, 0, len(st.byHost))
	add := func(u *Upstream, member bool) {
		s := Stats{
			ID: u.id, URL: u.url.String(), Weight: u.weight,
			Healthy: member && slices.Contains(st.healthy, u), Member: member,
			Requests: u.requests.Load(), Failures: u.failures.Load(),
			InFlight: u.inflight.Load(),
		}
		if n := u.observed.Load(); n > 0 {
			s.Latency = time.Duration(u.latency.Load() / int64(n))
		}
		if member && !s.Healthy {
			s.DownReason = p.downReason(u)
		}
		out = append(out, s)
	}
	for _, u := range st.members {
		add(u, true)
	}
	for _, u := range st.byHost {
		if u.inflight.Load() > 0 && !slices.Contains(st.members, u) {
			add(u, false)
		}
	}
	slices.SortFunc(out, func(a, b Stats) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// downReason says why u is not healthy.
func (p *Pool) downReason(u *Upstream) string {
	now := p.now()
	switch {
	case u.activeDown.Load():
		u.mu.Lock()
		why := u.failWhy
		u.mu.Unlock()
		return "active health check failed: " + why
	case u.passiveUntil.Load() > now:
		return fmt.Sprintf("passive health: too many failed requests; back in %s",
			time.Duration(u.passiveUntil.Load()-now).Round(time.Millisecond))
	case u.sharedDown.Load():
		return "marked down in the shared registry (by another instance's health checks)"
	}
	return "not yet in the healthy set"
}

// Run runs the Pool's background work until ctx is done: membership
// reloads every SyncInterval (which also applies registration expiry),
// active health checks when Health is set, and publication of down marks
// to the Registry. Requests are served without Run, but nothing expires
// and health is passive only.
func (p *Pool) Run(ctx context.Context) {
	p.init()
	p.running.Store(true)
	defer p.running.Store(false)
	if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
		p.logger().Warn("balance: sync failed", "err", err)
	}
	var wg sync.WaitGroup
	if p.Health != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.runHealth(ctx)
		}()
	}
	defer wg.Wait()
	every := p.SyncInterval
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
				p.logger().Warn("balance: sync failed", "err", err)
			}
		case m := <-p.marks:
			mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := p.reg.MarkDown(mctx, m.id, m.d); err != nil && ctx.Err() == nil {
				p.logger().Warn("balance: sharing health failed", "id", m.id, "err", err)
			}
			cancel()
		}
	}
}

// downMark is a health change to publish to the Registry.
type downMark struct {
	id string
	d  time.Duration // 0: clear
}

// publish queues a down mark for Run; it never blocks the caller.
func (p *Pool) publish(id string, d time.Duration) {
	select {
	case p.marks <- downMark{id, d}:
	default:
	}
}

// Handler returns an http.Handler serving the Pool's statistics (Stats)
// as JSON (GET and HEAD only), for a status endpoint.
func (p *Pool) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		writeJSON(w, http.StatusOK, p.Stats())
	})
}
