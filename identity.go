package sluice

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// SigningKey is one secret of an IdentitySigner, named by ID so that the
// receiving side can pick the right one while keys rotate.
type SigningKey struct {
	// ID names the key in signatures ("kid"). It must not contain ';',
	// '=' or spaces.
	ID string
	// Secret is the HMAC-SHA256 key; use at least 32 random bytes.
	Secret []byte
}

// DefaultSignatureHeader is the header an IdentitySigner writes when its
// Header field is empty.
const DefaultSignatureHeader = "X-Sluice-Identity-Signature"

// DefaultSignatureMaxAge is how long a signature is accepted when
// IdentitySigner.MaxAge is zero.
const DefaultSignatureMaxAge = 5 * time.Minute

// ErrBadSignature is returned by IdentitySigner.Verify for a missing,
// malformed, expired or forged signature.
var ErrBadSignature = errors.New("sluice: bad identity signature")

// IdentitySigner signs the identity headers of outbound requests so that
// an upstream can check they were set by the proxy and not by someone who
// reached it directly. It is an Authorizer that always allows: put it last
// in a Chain, after the Authorizers that set the identity headers.
//
// Two formats are offered. The default header value is
//
//	v1;kid=<key id>;t=<unix seconds>;sig=<base64url HMAC-SHA256>
//
// where the MAC covers the key id, the time and every header of Names
// (absent ones included, as absent). With JWT set, the value is an
// RFC 7519 JSON Web Token signed with HS256 (RFC 7518 §3.2) whose "kid"
// header names the key and whose claims are "iat", "exp" and "hdr", an
// object mapping each present identity header (lower case) to its value.
//
// The signature is bound to the identity headers and the time, not to the
// request line (a Director may still rewrite the path after authorization):
// anyone who can read the proxy's outbound traffic can replay it within
// MaxAge. Keys rotate by putting the new key first in Keys and keeping the
// old one after it until every signature made with it has expired.
type IdentitySigner struct {
	// Header is the header that carries the signature. If empty,
	// DefaultSignatureHeader is used. Add it to Proxy.IdentityHeaders too.
	Header string

	// Names are the identity headers covered by the signature, e.g.
	// "X-Sluice-User-Email". Both sides must use the same list.
	Names []string

	// Keys[0] signs; every key verifies. Sign and Verify fail without
	// keys.
	Keys []SigningKey

	// JWT selects the HS256 JSON Web Token format.
	JWT bool

	// MaxAge is how long after signing Verify accepts a signature (and
	// the "exp" of a JWT). If zero, DefaultSignatureMaxAge is used.
	MaxAge time.Duration

	now func() time.Time // for tests; time.Now if nil
}

func (s *IdentitySigner) header() string {
	if s.Header != "" {
		return s.Header
	}
	return DefaultSignatureHeader
}

func (s *IdentitySigner) maxAge() time.Duration {
	if s.MaxAge > 0 {
		return s.MaxAge
	}
	return DefaultSignatureMaxAge
}

func (s *IdentitySigner) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// Authorize signs pr.Out's identity headers and allows the request. It
// fails (closed) only when the signer has no key.
func (s *IdentitySigner) Authorize(pr *ProxyRequest) (Decision, error) {
	if err := s.Sign(pr.Out.Header); err != nil {
		return Decision{}, err
	}
	return Allow, nil
}

// Sign sets the signature header of h over h's identity headers, replacing
// any value it had.
func (s *IdentitySigner) Sign(h http.Header) error {
	if len(s.Keys) == 0 {
		return errors.New("sluice: identity signer has no key")
	}
	k := s.Keys[0]
	now := s.clock().Unix()
	var v string
	if s.JWT {
		claims := jwtClaims{IssuedAt: now, Expires: now + int64(s.maxAge()/time.Second), Headers: s.values(h)}
		v = signJWT(k, claims)
	} else {
		t := strconv.FormatInt(now, 10)
		v = "v1;kid=" + k.ID + ";t=" + t + ";sig=" + s.mac(k.Secret, k.ID, t, h)
	}
	h.Set(s.header(), v)
	return nil
}

// Verify checks the signature header of h, as an upstream receives it,
// against h's identity headers. It returns the identity headers the
// signature covers (lower-case names) or an error wrapping
// ErrBadSignature. For a JWT, the values must also equal the headers'.
func (s *IdentitySigner) Verify(h http.Header) (map[string]string, error) {
	v := h.Get(s.header())
	if v == "" {
		return nil, fmt.Errorf("%w: no %s header", ErrBadSignature, s.header())
	}
	now := s.clock()
	if s.JWT {
		claims, err := s.verifyJWT(v)
		if err != nil {
			return nil, err
		}
		if now.Unix() >= claims.Expires || claims.IssuedAt > now.Add(time.Minute).Unix() ||
			now.Sub(time.Unix(claims.IssuedAt, 0)) >= s.maxAge() {
			return nil, fmt.Errorf("%w: token expired or not yet valid", ErrBadSignature)
		}
		got := s.values(h)
		if len(got) != len(claims.Headers) {
			return nil, fmt.Errorf("%w: identity headers differ from the token", ErrBadSignature)
		}
		for k, v := range claims.Headers {
			if got[k] != v {
				return nil, fmt.Errorf("%w: identity header %s differs from the token", ErrBadSignature, k)
			}
		}
		return claims.Headers, nil
	}
	var kid, ts, sig string
	parts := strings.Split(v, ";")
	if len(parts) != 4 || parts[0] != "v1" {
		return nil, fmt.Errorf("%w: malformed", ErrBadSignature)
	}
	for _, p := range parts[1:] {
		name, val, _ := strings.Cut(p, "=")
		switch name {
		case "kid":
			kid = val
		case "t":
			ts = val
		case "sig":
			sig = val
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed time", ErrBadSignature)
	}
	signed := time.Unix(t, 0)
	if now.Sub(signed) >= s.maxAge() || signed.After(now.Add(time.Minute)) {
		return nil, fmt.Errorf("%w: expired or not yet valid", ErrBadSignature)
	}
	k, ok := s.key(kid)
	if !ok {
		return nil, fmt.Errorf("%w: unknown key id %q", ErrBadSignature, kid)
	}
	if !hmac.Equal([]byte(sig), []byte(s.mac(k.Secret, kid, ts, h))) {
		return nil, fmt.Errorf("%w: signature mismatch", ErrBadSignature)
	}
	return s.values(h), nil
}

func (s *IdentitySigner) key(id string) (SigningKey, bool) {
	for _, k := range s.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return SigningKey{}, false
}

// mac computes the v1 signature. Header values cannot contain CR, LF or
// NUL, so the encoding below is unambiguous; an absent header is written
// without ':' and so differs from an empty one.
func (s *IdentitySigner) mac(secret []byte, kid, t string, h http.Header) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "sluice-identity-v1\n%s\n%s\n", kid, t)
	for _, name := range s.Names {
		m.Write([]byte(strings.ToLower(name)))
		if vv, ok := h[textproto.CanonicalMIMEHeaderKey(name)]; ok {
			m.Write([]byte{':'})
			m.Write([]byte(strings.Join(vv, "\x00")))
		}
		m.Write([]byte{'\n'})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// values returns the present identity headers of h, multiple values
// joined with ", ".
func (s *IdentitySigner) values(h http.Header) map[string]string {
	out := make(map[string]string, len(s.Names))
	for _, name := range s.Names {
		if vv, ok := h[textproto.CanonicalMIMEHeaderKey(name)]; ok {
			out[strings.ToLower(name)] = strings.Join(vv, ", ")
		}
	}
	return out
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

type jwtClaims struct {
	IssuedAt int64             `json:"iat"`
	Expires  int64             `json:"exp"`
	Headers  map[string]string `json:"hdr"`
}

func signJWT(k SigningKey, claims jwtClaims) string {
	hb, _ := json.Marshal(jwtHeader{Alg: "HS256", Kid: k.ID, Typ: "JWT"})
	cb, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	m := hmac.New(sha256.New, k.Secret)
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

// maxJWT bounds the token Verify parses.
const maxJWT = 16 << 10

func (s *IdentitySigner) verifyJWT(tok string) (*jwtClaims, error) {
	if len(tok) > maxJWT {
		return nil, fmt.Errorf("%w: token too long", ErrBadSignature)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: malformed token", ErrBadSignature)
	}
	enc := base64.RawURLEncoding
	hb, err := enc.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: malformed token header", ErrBadSignature)
	}
	var jh jwtHeader
	if err := json.Unmarshal(hb, &jh); err != nil {
		return nil, fmt.Errorf("%w: malformed token header", ErrBadSignature)
	}
	// Only HS256 is ever accepted: "none" and other algorithms are refused
	// (RFC 8725 §3.1).
	if jh.Alg != "HS256" {
		return nil, fmt.Errorf("%w: algorithm %q not accepted", ErrBadSignature, jh.Alg)
	}
	k, ok := s.key(jh.Kid)
	if !ok {
		return nil, fmt.Errorf("%w: unknown key id %q", ErrBadSignature, jh.Kid)
	}
	sig, err := enc.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: malformed token signature", ErrBadSignature)
	}
	m := hmac.New(sha256.New, k.Secret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, m.Sum(nil)) {
		return nil, fmt.Errorf("%w: signature mismatch", ErrBadSignature)
	}
	cb, err := enc.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: malformed token claims", ErrBadSignature)
	}
	var c jwtClaims
	if err := json.Unmarshal(cb, &c); err != nil {
		return nil, fmt.Errorf("%w: malformed token claims", ErrBadSignature)
	}
	if c.Headers == nil {
		c.Headers = map[string]string{}
	}
	return &c, nil
}
