package sluice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Registrar is the http.Handler through which targets register
// themselves in a Pool. A host program mounts it where it likes (the
// balancer example answers POST /register on the proxy's own port):
//
//   - POST with a JSON body {"url": "http://10.0.0.5:8080", "id": "web-1",
//     "weight": 2, "ttl": 30} (or the same names as form or query
//     parameters) adds or refreshes the target and answers 200 with the
//     stored member and the granted "ttl" in seconds. Registrations
//     expire after the TTL unless POSTed again: a target heartbeats by
//     repeating its registration (Registrant does it). Only "url" is
//     required; "id" defaults to the URL.
//   - DELETE with "id" (or "url") as a query parameter or JSON body
//     removes the target; 204.
//   - GET lists the pool's targets with their statistics as JSON.
//
// Bodies are limited to 4 KiB. With Secret set, every request must carry
// "Authorization: Bearer SECRET" (compared in constant time) or gets 401.
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
}

// DefaultRegistrationTTL is the registration lifetime a Registrar grants
// when its TTL is zero.
const DefaultRegistrationTTL = 30 * time.Second

const maxRegistrationBody = 4 << 10

// registration is the wire form of a registration request and answer.
type registration struct {
	ID     string `json:"id,omitempty"`
	URL    string `json:"url"`
	Weight int    `json:"weight,omitempty"`
	TTL    int64  `json:"ttl,omitempty"` // seconds
}

func (h *Registrar) ttl() time.Duration {
	if h.TTL > 0 {
		return h.TTL
	}
	return DefaultRegistrationTTL
}

// ServeHTTP implements http.Handler.
func (h *Registrar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	m := Member{ID: reg.ID, URL: reg.URL, Weight: reg.Weight}
	target, err := m.normalize()
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if h.Allow != nil {
		if err := h.Allow(target); err != nil {
			writeJSONError(w, http.StatusForbidden, err.Error())
			return
		}
	}
	ttl := h.ttl()
	if reg.TTL > 0 && reg.TTL < int64(ttl/time.Second) {
		ttl = time.Duration(reg.TTL) * time.Second
	}
	if err := h.Pool.Add(r.Context(), m, ttl); err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, registration{ID: m.ID, URL: m.URL, Weight: m.Weight, TTL: int64(math.Ceil(ttl.Seconds()))})
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
func readRegistration(r *http.Request) (registration, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRegistrationBody+1))
	if err != nil {
		return registration{}, fmt.Errorf("reading registration: %w", err)
	}
	if len(body) > maxRegistrationBody {
		return registration{}, errors.New("registration body over 4 KiB")
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if len(bytes.TrimSpace(body)) > 0 && ct != "application/x-www-form-urlencoded" {
		return parseRegistration(body)
	}
	q := r.URL.Query()
	if ct == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return registration{}, fmt.Errorf("registration form: %w", err)
		}
		for k, v := range form {
			q[k] = v
		}
	}
	reg := registration{ID: q.Get("id"), URL: q.Get("url")}
	if s := q.Get("weight"); s != "" {
		if reg.Weight, err = strconv.Atoi(s); err != nil {
			return registration{}, fmt.Errorf("registration weight: %w", err)
		}
	}
	if s := q.Get("ttl"); s != "" {
		if reg.TTL, err = strconv.ParseInt(s, 10, 64); err != nil {
			return registration{}, fmt.Errorf("registration ttl: %w", err)
		}
	}
	return reg, checkRegistration(reg)
}

// parseRegistration decodes a JSON registration strictly: one object,
// known fields only.
func parseRegistration(body []byte) (registration, error) {
	var reg registration
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		return registration{}, fmt.Errorf("registration json: %w", err)
	}
	if dec.More() {
		return registration{}, errors.New("registration json: trailing data")
	}
	return reg, checkRegistration(reg)
}

func checkRegistration(reg registration) error {
	if reg.TTL < 0 {
		return errors.New("registration ttl is negative")
	}
	if len(reg.URL) > 2048 {
		return errors.New("registration url longer than 2048 bytes")
	}
	return nil
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

// Registrant keeps one target registered with a Registrar: the
// self-registration loop a backend runs next to its server.
type Registrant struct {
	// Endpoint is the Registrar's URL, e.g. "http://lb:8080/register".
	Endpoint string

	// Member is the target to register; its URL is required.
	Member Member

	// TTL is the registration lifetime to ask for. If zero, the
	// Registrar's default. The registration is renewed every third of
	// the TTL the Registrar granted.
	TTL time.Duration

	// Secret is sent as a bearer token when not empty.
	Secret string

	// Client sends the registrations. If nil, a client with a 5 second
	// timeout whose idle connections are closed when Run returns.
	Client *http.Client

	// Logger receives registration failures. If nil, slog.Default().
	Logger *slog.Logger
}

// Run registers the target, renews the registration until ctx is done,
// then removes it (within 5 seconds). Failed registrations are retried
// every second, up to the renewal interval. Run returns nil when ctx is
// done, or an error at once if the Endpoint is not a URL.
func (r *Registrant) Run(ctx context.Context) error {
	if _, err := url.Parse(r.Endpoint); err != nil || r.Endpoint == "" {
		return fmt.Errorf("sluice: registrant endpoint %q: not a URL", r.Endpoint)
	}
	client := r.Client
	if client == nil {
		t := &http.Transport{MaxIdleConnsPerHost: 1}
		defer t.CloseIdleConnections()
		client = &http.Client{Transport: t, Timeout: 5 * time.Second}
	}
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.deregister(dctx, client); err != nil {
			log.Warn("sluice: deregistration failed", "endpoint", r.Endpoint, "err", err)
		}
	}()
	for {
		wait := time.Second
		granted, err := r.register(ctx, client)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("sluice: registration failed", "endpoint", r.Endpoint, "err", err)
		} else {
			wait = max(granted/3, 100*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (r *Registrant) register(ctx context.Context, client *http.Client) (time.Duration, error) {
	reg := registration{ID: r.Member.ID, URL: r.Member.URL, Weight: r.Member.Weight,
		TTL: int64(math.Ceil(r.TTL.Seconds()))}
	body, _ := json.Marshal(reg)
	res, err := r.do(ctx, client, http.MethodPost, body)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxRegistrationBody))
	if err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("registrar answered %s: %s", res.Status, bytes.TrimSpace(b))
	}
	var got registration
	if err := json.Unmarshal(b, &got); err != nil || got.TTL <= 0 {
		return 0, fmt.Errorf("registrar answer: bad ttl in %q", b)
	}
	return time.Duration(got.TTL) * time.Second, nil
}

func (r *Registrant) deregister(ctx context.Context, client *http.Client) error {
	id := r.Member.ID
	if id == "" {
		id = r.Member.URL
	}
	body, _ := json.Marshal(registration{ID: id})
	res, err := r.do(ctx, client, http.MethodDelete, body)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		return fmt.Errorf("registrar answered %s", res.Status)
	}
	return nil
}

func (r *Registrant) do(ctx context.Context, client *http.Client, method string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.Endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+r.Secret)
	}
	return client.Do(req)
}
