package balance

import (
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sluiceproxy/sluice"
)

// A Policy chooses the target of each request among a Pool's healthy
// targets. Picker is called whenever the set of healthy targets changes,
// never concurrently, with the targets ordered by ID; the Picker it
// returns is used concurrently by many requests until the next change, so
// per-set work (a hash ring, a weighted schedule) is done once there and
// picking stays cheap. State that must survive set changes (a round-robin
// position) belongs to the Policy value.
//
// The policies of this package cover the usual needs; a new one
// implements Policy and Picker with Upstream's accessors (ID, URL,
// Weight, InFlight).
type Policy interface {
	Picker(targets []*Upstream) Picker
}

// A Picker picks one target for a request, from the set it was built for.
// It returns nil only if it has no target for the request (the Pool then
// answers sluice.ErrNoUpstream). Pick must be safe for concurrent use.
// On a retry the Pool replaces a pick the request already tried
// (sluice.ProxyRequest.Tried) by an untried target when there is one.
type Picker interface {
	Pick(pr *sluice.ProxyRequest) *Upstream
}

// RoundRobin returns a Policy that sends requests to the targets in turn,
// ignoring weights. Picks take one atomic increment.
func RoundRobin() Policy { return &roundRobin{} }

type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) Picker(targets []*Upstream) Picker {
	return &rrPicker{targets: targets, next: &r.next}
}

type rrPicker struct {
	targets []*Upstream
	next    *atomic.Uint64
}

func (p *rrPicker) Pick(*sluice.ProxyRequest) *Upstream {
	return p.targets[(p.next.Add(1)-1)%uint64(len(p.targets))]
}

// WeightedRoundRobin returns a Policy that sends each target a share of
// requests proportional to its weight, interleaved smoothly as nginx's
// smooth weighted round-robin does (weights 5,1,1 give a a b a c a a, not
// a a a a a b c). The schedule is computed when the set changes; picks
// take one atomic increment. When the weights of a set sum to more than
// 65536 they are scaled down to fit, which rounds small shares.
func WeightedRoundRobin() Policy { return &weightedRR{} }

type weightedRR struct{ next atomic.Uint64 }

const maxSchedule = 1 << 16

func (r *weightedRR) Picker(targets []*Upstream) Picker {
	w := make([]int, len(targets))
	g, sum := 0, 0
	for i, t := range targets {
		w[i] = t.weight
		g = gcd(g, w[i])
		sum += w[i]
	}
	for i := range w {
		w[i] /= g
	}
	sum /= g
	if sum > maxSchedule {
		total := sum
		sum = 0
		for i := range w {
			w[i] = max(1, w[i]*(maxSchedule/2)/total)
			sum += w[i]
		}
	}
	// nginx: each step, add every weight to its current value, pick the
	// largest current, subtract the total from it.
	cur := make([]int, len(w))
	sched := make([]*Upstream, sum)
	for s := range sched {
		best := 0
		for i := range w {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= sum
		sched[s] = targets[best]
	}
	return &rrPicker{targets: sched, next: &r.next}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// LeastConnections returns a Policy that sends each request to the target
// with the fewest attempts in flight relative to its weight. Ties are
// broken by a rotating start, so idle targets share the load in turn.
// A pick reads every target's counter: O(targets).
func LeastConnections() Policy { return &leastConn{} }

type leastConn struct{ next atomic.Uint64 }

func (l *leastConn) Picker(targets []*Upstream) Picker {
	return &leastConnPicker{targets: targets, next: &l.next}
}

type leastConnPicker struct {
	targets []*Upstream
	next    *atomic.Uint64
}

func (p *leastConnPicker) Pick(*sluice.ProxyRequest) *Upstream {
	n := len(p.targets)
	start := int((p.next.Add(1) - 1) % uint64(n))
	best := p.targets[start]
	bestLoad := best.inflight.Load()
	for k := 1; k < n; k++ {
		t := p.targets[(start+k)%n]
		if load := t.inflight.Load(); lessLoaded(load, t.weight, bestLoad, best.weight) {
			best, bestLoad = t, load
		}
	}
	return best
}

// lessLoaded reports whether a/wa < b/wb without division.
func lessLoaded(a int64, wa int, b int64, wb int) bool {
	return a*int64(wb) < b*int64(wa)
}

// RandomTwoChoices returns a Policy that draws two distinct targets at
// random and sends the request to the one with fewer attempts in flight
// relative to its weight ("the power of two choices", Mitzenmacher 2001):
// nearly the balance of least-connections at O(1) per pick, and no herd
// on one target when many proxies share stale views.
func RandomTwoChoices() Policy { return randomTwo{} }

type randomTwo struct{}

func (randomTwo) Picker(targets []*Upstream) Picker { return randomTwoPicker(targets) }

type randomTwoPicker []*Upstream

func (ts randomTwoPicker) Pick(*sluice.ProxyRequest) *Upstream {
	n := len(ts)
	if n == 1 {
		return ts[0]
	}
	i := rand.IntN(n)
	j := (i + 1 + rand.IntN(n-1)) % n
	a, b := ts[i], ts[j]
	if lessLoaded(b.inflight.Load(), b.weight, a.inflight.Load(), a.weight) {
		return b
	}
	return a
}

// A HashKey returns a 64-bit hash of the key a request is placed by (see
// ConsistentHash), and false when the request has no key. The hash must
// be the same in every proxy instance sharing a Registry (hash/fnv, not
// hash/maphash, whose seed differs per process); ConsistentHash mixes it
// again, so a plain FNV-1a is enough. HashHeader, HashCookie and
// HashClientIP cover the usual keys.
type HashKey func(pr *sluice.ProxyRequest) (hash uint64, ok bool)

// HashHeader returns a HashKey reading the request header name (all its
// values, as received); a request without it has no key.
func HashHeader(name string) HashKey {
	name = textproto.CanonicalMIMEHeaderKey(name)
	return func(pr *sluice.ProxyRequest) (uint64, bool) {
		vv := pr.In.Header[name]
		if len(vv) == 0 {
			return 0, false
		}
		h := uint64(fnvOffset)
		for _, v := range vv {
			h = fnvString(h, v)
		}
		return h, true
	}
}

// HashCookie returns a HashKey reading the value of the request cookie
// name; a request without it, or with an empty value, has no key.
func HashCookie(name string) HashKey {
	return func(pr *sluice.ProxyRequest) (uint64, bool) {
		v := cookieValue(pr.In.Header, name)
		return fnvString(fnvOffset, v), v != ""
	}
}

// HashClientIP returns a HashKey reading the client address as the Proxy
// decided it (see sluice.ProxyRequest.ClientAddr and
// sluice.Proxy.TrustedProxies).
func HashClientIP() HashKey {
	return func(pr *sluice.ProxyRequest) (uint64, bool) {
		a := pr.ClientAddr()
		if !a.IsValid() {
			return 0, false
		}
		b := a.Unmap().As16()
		return fnvBytes(fnvOffset, b[:]), true
	}
}

// cookieValue returns the value of the first cookie called name in the
// Cookie headers of h, without allocating (RFC 6265 §5.4 syntax).
func cookieValue(h http.Header, name string) string {
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if ok && k == name {
				if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return v
			}
		}
	}
	return ""
}

// ConsistentHash returns a Policy that sends all requests with the same
// key to the same target, using a hash ring with virtual nodes (Karger et
// al. 1997; 160 points per unit of weight, as ketama). When a target
// leaves the set only the keys it served move, and a new target takes
// about its share of keys from the others, so remapping is bounded by
// the changed target's share. The ring depends only on member IDs and
// weights, and its hash (FNV-1a followed by the murmur3 finalizer, which
// spreads FNV's weak low bits) never changes between versions, so every
// proxy instance maps a key to the same target. Requests without a key
// are spread round-robin.
//
// ConsistentHash panics if key is nil, since that is a programming
// error.
func ConsistentHash(key HashKey) Policy {
	if key == nil {
		panic("balance: ConsistentHash needs a HashKey")
	}
	return &consistentHash{key: key}
}

type consistentHash struct {
	key  HashKey
	next atomic.Uint64
}

type ringPoint struct {
	hash uint64
	t    *Upstream
}

const (
	ringPointsPerWeight = 160
	maxRingPoints       = 1 << 18
)

func (c *consistentHash) Picker(targets []*Upstream) Picker {
	total := 0
	for _, t := range targets {
		total += t.weight
	}
	per := ringPointsPerWeight
	if total*per > maxRingPoints {
		per = max(1, maxRingPoints/total)
	}
	points := make([]ringPoint, 0, total*per)
	var buf []byte
	for _, t := range targets {
		for i := range t.weight * per {
			buf = strconv.AppendInt(append(append(buf[:0], t.id...), '#'), int64(i), 10)
			points = append(points, ringPoint{hashBytes(buf), t})
		}
	}
	slices.SortFunc(points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return strings.Compare(a.t.id, b.t.id)
	})
	return &ringPicker{key: c.key, points: points, rr: &rrPicker{targets: targets, next: &c.next}}
}

type ringPicker struct {
	key    HashKey
	points []ringPoint
	rr     *rrPicker
}

func (r *ringPicker) Pick(pr *sluice.ProxyRequest) *Upstream {
	h, ok := r.key(pr)
	if !ok {
		return r.rr.Pick(pr)
	}
	return r.lookup(mix64(h))
}

func (r *ringPicker) lookup(h uint64) *Upstream {
	i, _ := slices.BinarySearchFunc(r.points, h, func(p ringPoint, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	if i == len(r.points) {
		i = 0
	}
	return r.points[i].t
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashBytes is the hash of ring points and sticky cookie values: FNV-1a
// followed by the murmur3 finalizer. It must never change: proxy
// instances sharing a Registry agree on it.
func hashBytes(b []byte) uint64 { return mix64(fnvBytes(fnvOffset, b)) }

// fnvBytes continues the FNV-1a hash h over b.
func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// fnvString continues the FNV-1a hash h over s.
func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is the murmur3 64-bit finalizer.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// StickyCookie returns a Policy that keeps a client on one target with a
// cookie: a request carrying the cookie name that designates a healthy
// target goes there; any other request is placed by fallback (if nil,
// RoundRobin()) and its response sets the cookie. The cookie value is a
// hash of the target ID, so it reveals no address. The cookie is a
// session cookie with Path=/, HttpOnly, SameSite=Lax, and Secure when the
// client connection is TLS; it is not removed from the request the
// target gets.
//
// StickyCookie panics if name is not a valid cookie name, since that is
// a programming error.
func StickyCookie(name string, fallback Policy) Policy {
	if name == "" || strings.ContainsAny(name, "=;, \t\r\n\"") {
		panic("balance: StickyCookie: invalid cookie name " + strconv.Quote(name))
	}
	if fallback == nil {
		fallback = RoundRobin()
	}
	return &sticky{name: name, fallback: fallback}
}

type sticky struct {
	name     string
	fallback Policy
}

type stickyPicker struct {
	name     string
	targets  []*Upstream
	byValue  map[string]*Upstream
	cookies  map[*Upstream][2]string // plain, secure
	fallback Picker
}

func (s *sticky) Picker(targets []*Upstream) Picker {
	sp := &stickyPicker{
		name:     s.name,
		targets:  targets,
		byValue:  make(map[string]*Upstream, len(targets)),
		cookies:  make(map[*Upstream][2]string, len(targets)),
		fallback: s.fallback.Picker(targets),
	}
	for _, t := range targets {
		v := strconv.FormatUint(hashBytes([]byte(t.id)), 16)
		sp.byValue[v] = t
		c := s.name + "=" + v + "; Path=/; HttpOnly; SameSite=Lax"
		sp.cookies[t] = [2]string{c, c + "; Secure"}
	}
	return sp
}

func (s *stickyPicker) Pick(pr *sluice.ProxyRequest) *Upstream {
	if t := s.byValue[cookieValue(pr.In.Header, s.name)]; t != nil && !slices.Contains(pr.Tried(), t.host) {
		return t
	}
	t := s.fallback.Pick(pr)
	if t == nil {
		return nil
	}
	if pr.Attempt() > 0 && slices.Contains(pr.Tried(), t.host) {
		t = untried(s.targets, t, pr.Tried())
	}
	h := pr.ResponseHeader()
	// A retry replaces the cookie set for the previous attempt.
	h["Set-Cookie"] = slices.DeleteFunc(h["Set-Cookie"], func(c string) bool {
		return strings.HasPrefix(c, s.name+"=")
	})
	c := s.cookies[t][0]
	if pr.In.TLS != nil {
		c = s.cookies[t][1]
	}
	h.Add("Set-Cookie", c)
	return t
}
