// Package hs256 signs and verifies compact JSON Web Tokens (RFC 7519)
// with the HS256 algorithm (HMAC-SHA256, RFC 7518 §3.2), and nothing else:
// a token naming any other algorithm ("none" included) is refused, so the
// algorithm-confusion attacks of generic JWT libraries cannot happen. It is
// the one JWT implementation of sluice: upload descriptions and
// pre-authorizations (package upload, the core's Upload) and identity
// signatures (package identity) use it.
package hs256

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// MaxTokenSize bounds the tokens Verify accepts, so that a hostile header
// costs little to refuse. It leaves room for the description of a form of
// a few hundred uploaded files, the largest token sluice makes.
const MaxTokenSize = 64 << 10

// header is the JOSE header of the tokens Sign makes, encoded once.
var header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Errors returned by Verify and VerifyKeyID.
var (
	ErrMalformed  = errors.New("hs256: malformed token")
	ErrAlgorithm  = errors.New("hs256: algorithm is not HS256")
	ErrSignature  = errors.New("hs256: signature mismatch")
	ErrNoKey      = errors.New("hs256: empty key")
	ErrUnknownKey = errors.New("hs256: unknown key id")
)

// Sign returns the compact serialization (RFC 7515 §7.1) of a JWT whose
// payload is claims encoded as JSON, signed with key.
func Sign(key []byte, claims any) (string, error) {
	return sign(header, key, claims)
}

// SignKeyID is Sign with a "kid" header parameter (RFC 7515 §4.1.4)
// naming the key, for a verifier that holds several (see VerifyKeyID).
func SignKeyID(kid string, key []byte, claims any) (string, error) {
	hb, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid"`
	}{"HS256", "JWT", kid})
	if err != nil {
		return "", fmt.Errorf("hs256: encoding header: %w", err)
	}
	return sign(base64.RawURLEncoding.EncodeToString(hb), key, claims)
}

func sign(header string, key []byte, claims any) (string, error) {
	if len(key) == 0 {
		return "", ErrNoKey
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("hs256: encoding claims: %w", err)
	}
	var b strings.Builder
	b.Grow(len(header) + 1 + base64.RawURLEncoding.EncodedLen(len(payload)) + 1 + 43)
	b.WriteString(header)
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(payload))
	signingInput := b.String()
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(mac(key, signingInput)))
	return b.String(), nil
}

// Verify checks that token is an HS256 JWT signed with key and decodes its
// payload into claims. The signature is checked in constant time before
// the payload is decoded. Verify does not look at time claims (exp, nbf):
// the caller knows which ones it requires. A "kid" header, if any, is
// ignored.
func Verify(key []byte, token string, claims any) error {
	if len(key) == 0 {
		return ErrNoKey
	}
	return VerifyKeyID(token, func(string) []byte { return key }, claims)
}

// VerifyKeyID is Verify with the key that keyFor returns for the token's
// "kid" header ("" when it has none). A nil or empty key refuses the token
// with ErrUnknownKey, so keyFor returns nil for a key id it does not know.
func VerifyKeyID(token string, keyFor func(kid string) []byte, claims any) error {
	if len(token) > MaxTokenSize {
		return fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenSize)
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return ErrMalformed
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return ErrMalformed
	}
	hb, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	var jh struct {
		Alg  string `json:"alg"`
		Kid  string `json:"kid"`
		Crit []any  `json:"crit"`
	}
	if err := json.Unmarshal(hb, &jh); err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	if jh.Alg != "HS256" {
		return fmt.Errorf("%w: %q", ErrAlgorithm, jh.Alg)
	}
	if jh.Crit != nil {
		// RFC 7515 §4.1.11: critical extensions we do not understand
		// make the token invalid.
		return fmt.Errorf("%w: crit header not supported", ErrMalformed)
	}
	key := keyFor(jh.Kid)
	if len(key) == 0 {
		return fmt.Errorf("%w: %q", ErrUnknownKey, jh.Kid)
	}
	sb, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	if !hmac.Equal(sb, mac(key, token[:len(h)+1+len(payload)])) {
		return ErrSignature
	}
	pb, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	if err := dec.Decode(claims); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return nil
}

func mac(key []byte, signingInput string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signingInput))
	return m.Sum(nil)
}
