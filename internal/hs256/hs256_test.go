package hs256

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type claims struct {
	Sub string `json:"sub"`
	N   int64  `json:"n"`
}

func TestRoundTrip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tok, err := Sign(key, claims{Sub: "file", N: 42})
	if err != nil {
		t.Fatal(err)
	}
	var got claims
	if err := Verify(key, tok, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(claims{Sub: "file", N: 42}, got); diff != "" {
		t.Fatalf("claims (-want +got):\n%s", diff)
	}
}

// TestKnownVector checks Sign against an HMAC computed independently
// from the RFC 7515 definition of the signing input.
func TestKnownVector(t *testing.T) {
	key := []byte("secret")
	tok, err := Sign(key, map[string]string{"a": "b"})
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(`{"a":"b"}`))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(input))
	want := input + "." + enc.EncodeToString(m.Sum(nil))
	if tok != want {
		t.Fatalf("token\n got %s\nwant %s", tok, want)
	}
}

// TestKeyID: the "kid" header picks the key among several, an unknown one
// is refused, and the header is what RFC 7515 §4.1.4 says.
func TestKeyID(t *testing.T) {
	keys := map[string][]byte{"k1": []byte("first key"), "k2": []byte("second key")}
	keyFor := func(kid string) []byte { return keys[kid] }
	tok, err := SignKeyID("k2", keys["k2"], claims{Sub: "x", N: 7})
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := strings.Cut(tok, ".")
	if hb, _ := base64.RawURLEncoding.DecodeString(h); string(hb) != `{"alg":"HS256","typ":"JWT","kid":"k2"}` {
		t.Errorf("header %s", hb)
	}
	var got claims
	if err := VerifyKeyID(tok, keyFor, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(claims{Sub: "x", N: 7}, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	// Verify with the single right key ignores kid.
	if err := Verify(keys["k2"], tok, &got); err != nil {
		t.Errorf("Verify of a token with kid: %v", err)
	}
	tests := []struct {
		name  string
		token func() string
		want  error
	}{
		{"unknown kid", func() string { tok, _ := SignKeyID("k3", []byte("k3"), claims{}); return tok }, ErrUnknownKey},
		{"no kid", func() string { tok, _ := Sign(keys["k1"], claims{}); return tok }, ErrUnknownKey},
		{"kid of another key", func() string { tok, _ := SignKeyID("k1", keys["k2"], claims{}); return tok }, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifyKeyID(tt.token(), keyFor, &got); !errors.Is(err, tt.want) {
				t.Fatalf("VerifyKeyID: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	key := []byte("k1")
	good, _ := Sign(key, claims{Sub: "x"})
	parts := strings.Split(good, ".")
	enc := base64.RawURLEncoding
	forge := func(h string) string {
		input := enc.EncodeToString([]byte(h)) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(input))
		return input + "." + enc.EncodeToString(m.Sum(nil))
	}
	tests := []struct {
		name  string
		key   []byte
		token string
		want  error
	}{
		{"wrong key", []byte("k2"), good, ErrSignature},
		{"tampered payload", key, parts[0] + "." + enc.EncodeToString([]byte(`{"sub":"y"}`)) + "." + parts[2], ErrSignature},
		{"alg none", key, enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", ErrAlgorithm},
		{"alg HS512", key, forge(`{"alg":"HS512"}`), ErrAlgorithm},
		{"crit", key, forge(`{"alg":"HS256","crit":["exp"]}`), ErrMalformed},
		{"two parts", key, parts[0] + "." + parts[1], ErrMalformed},
		{"four parts", key, good + ".x", ErrMalformed},
		{"bad base64", key, "!!." + parts[1] + "." + parts[2], ErrMalformed},
		{"empty key", nil, good, ErrNoKey},
		{"too long", key, strings.Repeat("a", MaxTokenSize+1), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c claims
			err := Verify(tt.key, tt.token, &c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	key := []byte("fuzzkey")
	good, _ := Sign(key, claims{Sub: "s", N: 1})
	f.Add(good)
	f.Add("a.b.c")
	f.Add("")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		var c claims
		if err := Verify(key, tok, &c); err != nil {
			return
		}
		// A token that verifies must be one we could have signed: its
		// signature recomputes over its own signing input.
		i := strings.LastIndexByte(tok, '.')
		m := hmac.New(sha256.New, key)
		m.Write([]byte(tok[:i]))
		if enc := base64.RawURLEncoding.EncodeToString(m.Sum(nil)); enc != tok[i+1:] {
			// Base64 decoding may accept a non-canonical encoding of the
			// same bytes; the MAC is what matters.
			sb, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
			if !hmac.Equal(sb, m.Sum(nil)) {
				t.Fatalf("accepted token with wrong signature: %q", tok)
			}
		}
	})
}
