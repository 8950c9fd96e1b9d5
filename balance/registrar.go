package balance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/balance/register"
)

// Registrar is the http.Handler through which targets register
// themselves in a Pool. A host program mounts it where it likes (the
// balancer example serves POST /register on a separate, loopback-only
// admin listener):
//
//   - POST with a JSON body {"url": "http://10.0.0.5:8080", "id": "web-1",
//     "weight": 2, "ttl": 30, "health_path": "/status"} (a
//     register.Registration, or the same names as form or query
//     parameters) adds or refreshes the target (Pool.Register) and
//     answers 200 with the stored member and the granted "ttl" in
//     seconds, plus a "warning" when the requested TTL was capped.
//     Registrations expire after the TTL unless POSTed again: a target
//     heartbeats by repeating its registration (register.Client does
//     it). Only "url" is required; "id" defaults to the URL;
//     "health_path" replaces the pool's HealthCheck.Path for this
//     target. A body that is a JSON object is read as JSON whatever its
//     Content-Type says (curl -d sends a form type).
//   - DELETE with "id" (or "url") as a query parameter or JSON body
//     removes the target; 204.
//   - GET lists the pool's targets with their statistics as JSON.
//
// Bodies are limited to 4 KiB. With Secret set, every request must carry
// "Authorization: Bearer SECRET" (compared in constant time) or gets 401.
// Cross-origin requests from browsers are refused with 403
// (http.CrossOriginProtection), so that a web page cannot register a
// target through a Registrar its visitor's browser can reach.
//
// Whatever the hooks, a Registrar refuses with 403 targets that no pool
// should point at: unspecified, multicast and broadcast addresses, hosts
// spelled as numbers that are not dotted-quad IPv4 ("2852039166",
// "0xa9fea9fe", which resolvers read as 169.254.169.254), and, unless
// AllowLinkLocal is set, link-local addresses and cloud metadata
// services. A host name is resolved at registration and refused if any
// of its addresses is; a name that does not resolve is accepted (health
// checks judge it). A name that resolves elsewhere later (DNS
// rebinding) is not caught: where registrations come from untrusted
// peers, admit only the address ranges your targets live in with Allow,
// and keep the proxy's egress away from the metadata service.
type Registrar struct {
	// Pool receives the registrations. It must not be nil.
	Pool *Pool

	// Secret, if not empty, is the shared secret registrations must
	// present as a bearer token (RFC 6750 §2.1). Without it anyone who
	// reaches the handler can point the pool anywhere: set it, or mount
	// the handler where only trusted peers reach it.
	Secret string

	// TTL is the registration lifetime granted when a request asks for
	// none, and the longest one granted. If zero, DefaultRegistrationTTL.
	TTL time.Duration

	// Allow, if not nil, vets each target URL; a non-nil error rejects
	// the registration with 403 and the error's text. Use it to keep
	// targets within the networks they may live in.
	Allow func(target *url.URL) error

	// MaxTargets bounds the pool's membership: registering a new member
	// while the pool's Registry holds MaxTargets members (static ones
	// included) is refused with 503 Service Unavailable. Heartbeats of
	// members are always accepted. If zero, DefaultMaxTargets; if
	// negative, there is no bound. Instances sharing a Registry each
	// check it before adding, so they may overshoot the bound together
	// by the registrations they accept at the same moment.
	MaxTargets int

	// AllowLinkLocal accepts targets on link-local addresses
	// (169.254.0.0/16, fe80::/10) and on the cloud metadata services
	// (169.254.169.254, fd00:ec2::254, 100.100.100.200,
	// metadata.google.internal), which are refused by default with 403:
	// a pool pointed there lets anyone who can register read the host's
	// cloud credentials through the proxy.
	AllowLinkLocal bool

	mu     sync.Mutex // serializes registrations of new members (MaxTargets)
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// DefaultRegistrationTTL is the registration lifetime a Registrar grants
// when its TTL is zero.
const DefaultRegistrationTTL = 30 * time.Second

// DefaultMaxTargets is the membership bound of a Registrar whose
// MaxTargets is zero.
const DefaultMaxTargets = 256

// ErrPoolFull is the error of a registration refused because the pool
// holds Registrar.MaxTargets members.
var ErrPoolFull = errors.New("balance: pool is full")

const maxRegistrationBody = 4 << 10

// registrarCSRF refuses cross-origin browser requests.
var registrarCSRF = http.NewCrossOriginProtection()

func (h *Registrar) ttl() time.Duration {
	if h.TTL > 0 {
		return h.TTL
	}
	return DefaultRegistrationTTL
}

// ServeHTTP implements http.Handler.
func (h *Registrar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := registrarCSRF.Check(r); err != nil {
		writeJSONError(w, http.StatusForbidden, "cross-origin browser request refused: registrations come from programs, not web pages")
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice registration"`)
		writeJSONError(w, http.StatusUnauthorized, "missing or wrong registration secret")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		writeJSON(w, http.StatusOK, h.Pool.Stats())
	case http.MethodPost, http.MethodPut:
		h.register(w, r)
	case http.MethodDelete:
		h.deregister(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, DELETE")
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func (h *Registrar) authorized(r *http.Request) bool {
	if h.Secret == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	// Hashing first makes the comparison constant-time in the length too.
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(h.Secret))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (h *Registrar) register(w http.ResponseWriter, r *http.Request) {
	reg, err := readRegistration(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if reg.URL == "" {
		writeJSONError(w, http.StatusBadRequest, `registration has no url: send {"url": "http://host:port"} as JSON, or url=... as a form or query parameter`)
		return
	}
	m := Member{ID: reg.ID, URL: reg.URL, Weight: reg.Weight, HealthPath: reg.HealthPath}
	target, err := m.normalize()
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := h.checkTarget(r.Context(), target); err != nil {
		writeJSONError(w, http.StatusForbidden, err.Error())
		return
	}
	if h.Allow != nil {
		if err := h.Allow(target); err != nil {
			writeJSONError(w, http.StatusForbidden, err.Error())
			return
		}
	}
	ttl, warning := h.ttl(), ""
	maxSecs := int64(math.Ceil(ttl.Seconds()))
	switch {
	case reg.TTLSeconds > maxSecs:
		warning = fmt.Sprintf("ttl %d s capped to %d s, the registrar's maximum: renew the registration within %d s", reg.TTLSeconds, maxSecs, maxSecs)
	case reg.TTLSeconds > 0:
		ttl = time.Duration(reg.TTLSeconds) * time.Second
	}
	if err := h.add(r.Context(), m, ttl); err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, register.Registration{
		ID: m.ID, URL: m.URL, Weight: m.Weight, TTLSeconds: int64(math.Ceil(ttl.Seconds())), HealthPath: m.HealthPath,
		Warning: warning,
	})
}

// add adds m to the pool within MaxTargets.
func (h *Registrar) add(ctx context.Context, m Member, ttl time.Duration) error {
	limit := h.MaxTargets
	if limit == 0 {
		limit = DefaultMaxTargets
	}
	if limit < 0 || h.Pool.isMember(m.ID) {
		return h.Pool.Register(ctx, m, ttl) // a heartbeat
	}
	// The Registry, not the Pool's snapshot, is counted: the snapshot
	// keeps one member per host, the Registry stores every ID.
	h.mu.Lock()
	defer h.mu.Unlock()
	ms, err := h.Pool.members(ctx)
	if err != nil {
		return err
	}
	if len(ms) >= limit && !slices.ContainsFunc(ms, func(o Member) bool { return o.ID == m.ID }) {
		return fmt.Errorf("%w: %d targets (Registrar.MaxTargets); deregister one first", ErrPoolFull, len(ms))
	}
	return h.Pool.Register(ctx, m, ttl)
}

// isMember reports whether the Pool's snapshot has a member with the ID.
func (p *Pool) isMember(id string) bool {
	p.init()
	_, found := slices.BinarySearchFunc(p.state.Load().members, id, func(u *Upstream, id string) int {
		return strings.Compare(u.id, id)
	})
	return found
}

// members returns the members in the Pool's Registry.
func (p *Pool) members(ctx context.Context) ([]Member, error) {
	p.init()
	ms, err := p.reg.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("balance: loading pool members: %w", err)
	}
	return ms, nil
}

// metadataAddrs are the cloud metadata services outside link-local
// space: AWS over IPv6, Alibaba Cloud.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
}

// metadataNames are names of cloud metadata services (GCP).
var metadataNames = []string{"metadata.google.internal", "metadata.goog", "metadata"}

// checkTarget refuses target hosts no pool should point at (see
// Registrar).
func (h *Registrar) checkTarget(ctx context.Context, target *url.URL) error {
	if target.Scheme == "unix" {
		// A socket path names a file on the proxy's machine (the
		// Docker daemon's, say), not a service of the registrant's.
		return errors.New("unix: targets cannot be registered over HTTP; add them with Pool.Add")
	}
	host := strings.TrimSuffix(strings.ToLower(target.Hostname()), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return h.checkAddr(host, a)
	}
	if endsInNumber(host) {
		return fmt.Errorf("target host %q is a number but not a dotted-quad IPv4 address: write the address as a.b.c.d", host)
	}
	if !h.AllowLinkLocal && slices.Contains(metadataNames, host) {
		return fmt.Errorf("target host %q is a cloud metadata service (Registrar.AllowLinkLocal)", host)
	}
	lookup := h.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil // nothing to judge: the health checks will
	}
	for _, a := range addrs {
		if err := h.checkAddr(host, a); err != nil {
			return err
		}
	}
	return nil
}

func (h *Registrar) checkAddr(host string, a netip.Addr) error {
	a = a.Unmap().WithZone("")
	switch {
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("target host %q: %s is not a unicast address", host, a)
	case h.AllowLinkLocal:
		return nil
	case a.IsLinkLocalUnicast():
		return fmt.Errorf("target host %q: %s is link-local, where cloud metadata services live (Registrar.AllowLinkLocal)", host, a)
	case slices.Contains(metadataAddrs, a):
		return fmt.Errorf("target host %q: %s is a cloud metadata service (Registrar.AllowLinkLocal)", host, a)
	}
	return nil
}

// endsInNumber reports whether the last label of host is a decimal or
// 0x-hexadecimal number: such a host is an IPv4 address to URL parsers
// and resolvers (WHATWG URL, inet_aton), in whatever base and form.
func endsInNumber(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

func (h *Registrar) deregister(w http.ResponseWriter, r *http.Request) {
	reg, err := readRegistration(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	id := reg.ID
	if id == "" {
		id = reg.URL
	}
	if id == "" {
		writeJSONError(w, http.StatusBadRequest, "want id or url")
		return
	}
	if err := h.Pool.Remove(r.Context(), id); err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// readRegistration reads a registration from a JSON body, or from form
// and query parameters.
func readRegistration(r *http.Request) (register.Registration, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRegistrationBody+1))
	if err != nil {
		return register.Registration{}, fmt.Errorf("reading registration: %w", err)
	}
	if len(body) > maxRegistrationBody {
		return register.Registration{}, errors.New("registration body over 4 KiB")
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	form := ct == "application/x-www-form-urlencoded"
	// A JSON object is read as JSON whatever the Content-Type: curl -d
	// sends one with the form type.
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && (!form || trimmed[0] == '{') {
		return parseRegistration(body)
	}
	q := r.URL.Query()
	if form {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return register.Registration{}, fmt.Errorf("registration form: %w", err)
		}
		for k, v := range form {
			q[k] = v
		}
	}
	reg := register.Registration{ID: q.Get("id"), URL: q.Get("url"), HealthPath: q.Get("health_path")}
	if s := q.Get("weight"); s != "" {
		if reg.Weight, err = strconv.Atoi(s); err != nil {
			return register.Registration{}, fmt.Errorf("registration weight: %w", err)
		}
	}
	if s := q.Get("ttl"); s != "" {
		if reg.TTLSeconds, err = strconv.ParseInt(s, 10, 64); err != nil {
			return register.Registration{}, fmt.Errorf("registration ttl: %w", err)
		}
	}
	return reg, checkRegistration(reg)
}

// parseRegistration decodes a JSON registration strictly: one object,
// known fields only.
func parseRegistration(body []byte) (register.Registration, error) {
	var reg register.Registration
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		return register.Registration{}, fmt.Errorf("registration json: %w", err)
	}
	if dec.More() {
		return register.Registration{}, errors.New("registration json: trailing data")
	}
	return reg, checkRegistration(reg)
}

func checkRegistration(reg register.Registration) error {
	if reg.TTLSeconds < 0 {
		return errors.New("registration ttl is negative")
	}
	if len(reg.URL) > 2048 {
		return errors.New("registration url longer than 2048 bytes")
	}
	return checkHealthPath(reg.HealthPath)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
