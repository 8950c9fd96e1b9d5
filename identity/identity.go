// Package identity signs the identity headers a proxy sets on the requests
// it forwards, and verifies them on the upstream side, so that an upstream
// can tell headers set by the proxy from headers set by someone who
// reached it directly.
//
// The proxy and its upstreams share one Signer configuration: the proxy
// calls Sign on each outbound request, usually from the last Authorizer of
// a sluice.Chain (after those that set the identity headers):
//
//	sign := sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
//		return sluice.Allow, signer.Sign(pr.Out.Header) // an error fails closed
//	})
//
// and each upstream calls Verify on what it receives. The package does not
// import the proxy: an upstream application imports only this.
package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/internal/hs256"
)

// Key is one secret of a Signer, named by ID so that the receiving side
// can pick the right one while keys rotate.
type Key struct {
	// ID names the key in signatures ("kid"). It must not contain ';',
	// '=' or spaces.
	ID string
	// Secret is the HMAC-SHA256 key; use at least 32 random bytes.
	Secret []byte
}

// DefaultSignatureHeader is the header a Signer writes and reads when its
// Header field is empty.
const DefaultSignatureHeader = "X-Sluice-Identity-Signature"

// DefaultMaxAge is how long a signature is accepted when Signer.MaxAge is
// zero.
const DefaultMaxAge = 5 * time.Minute

// ErrBadSignature is returned by Signer.Verify for a missing, malformed,
// expired or forged signature.
var ErrBadSignature = errors.New("identity: bad signature")

// Signer signs the identity headers of a request (on the proxy), and
// verifies them (on the upstream, with the same configuration). Its zero
// value has no key: Sign and Verify fail.
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
type Signer struct {
	// Header is the header that carries the signature. If empty,
	// DefaultSignatureHeader. Add it to the Proxy's IdentityHeaders too,
	// so that a client cannot send one.
	Header string

	// Names are the identity headers covered by the signature, e.g.
	// "X-Sluice-User-Email". Both sides must use the same list.
	Names []string

	// Keys[0] signs; every key verifies. If empty, Sign and Verify fail;
	// a key with an empty Secret never signs nor verifies.
	Keys []Key

	// JWT selects the HS256 JSON Web Token format. If false, the compact
	// v1 format.
	JWT bool

	// MaxAge is how long after signing Verify accepts a signature (and
	// the "exp" of a JWT). If zero, DefaultMaxAge.
	MaxAge time.Duration

	now func() time.Time // for tests; time.Now if nil
}

func (s *Signer) header() string {
	if s.Header != "" {
		return s.Header
	}
	return DefaultSignatureHeader
}

func (s *Signer) maxAge() time.Duration {
	if s.MaxAge > 0 {
		return s.MaxAge
	}
	return DefaultMaxAge
}

func (s *Signer) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// jwtClaims are the claims of the JWT format.
type jwtClaims struct {
	IssuedAt int64             `json:"iat"`
	Expires  int64             `json:"exp"`
	Headers  map[string]string `json:"hdr"`
}

// Sign sets the signature header of h over h's identity headers, replacing
// any value it had. It fails only when the Signer has no key, or its
// first key no secret.
func (s *Signer) Sign(h http.Header) error {
	if len(s.Keys) == 0 || len(s.Keys[0].Secret) == 0 {
		return errors.New("identity: signer has no key")
	}
	k := s.Keys[0]
	now := s.clock().Unix()
	var v string
	if s.JWT {
		claims := jwtClaims{IssuedAt: now, Expires: now + int64(s.maxAge()/time.Second), Headers: s.values(h)}
		var err error
		if v, err = hs256.SignKeyID(k.ID, k.Secret, claims); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
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
func (s *Signer) Verify(h http.Header) (map[string]string, error) {
	v := h.Get(s.header())
	if v == "" {
		return nil, fmt.Errorf("%w: no %s header", ErrBadSignature, s.header())
	}
	now := s.clock()
	if s.JWT {
		var claims jwtClaims
		// Only HS256 is ever accepted: "none" and other algorithms are
		// refused (RFC 8725 §3.1).
		if err := hs256.VerifyKeyID(v, s.secret, &claims); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
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
		return got, nil
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
	secret := s.secret(kid)
	if secret == nil {
		return nil, fmt.Errorf("%w: unknown key id %q", ErrBadSignature, kid)
	}
	if !hmac.Equal([]byte(sig), []byte(s.mac(secret, kid, ts, h))) {
		return nil, fmt.Errorf("%w: signature mismatch", ErrBadSignature)
	}
	return s.values(h), nil
}

// secret returns the secret of the key named id, nil if there is none.
func (s *Signer) secret(id string) []byte {
	for _, k := range s.Keys {
		if k.ID == id {
			return k.Secret
		}
	}
	return nil
}

// mac computes the v1 signature. Header values cannot contain CR, LF or
// NUL, so the encoding below is unambiguous; an absent header is written
// without ':' and so differs from an empty one.
func (s *Signer) mac(secret []byte, kid, t string, h http.Header) string {
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
func (s *Signer) values(h http.Header) map[string]string {
	out := make(map[string]string, len(s.Names))
	for _, name := range s.Names {
		if vv, ok := h[textproto.CanonicalMIMEHeaderKey(name)]; ok {
			out[strings.ToLower(name)] = strings.Join(vv, ", ")
		}
	}
	return out
}
