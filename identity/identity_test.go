package identity

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/hs256"
)

func TestSigner(t *testing.T) {
	k1 := Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	k2 := Key{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
	t0 := time.Unix(1_700_000_000, 0)
	names := []string{"X-Sluice-User", "X-Sluice-Email"}
	identity := func() http.Header {
		return http.Header{"X-Sluice-User": {"alice"}, "X-Sluice-Email": {"alice@example.com"}}
	}
	tests := []struct {
		name     string
		signKeys []Key
		verKeys  []Key
		verifyAt time.Duration
		tamper   func(h http.Header)
		wantErr  bool
	}{
		{"valid", []Key{k1}, []Key{k1}, time.Minute, nil, false},
		{"rotated: old key still verifies", []Key{k1}, []Key{k2, k1}, 0, nil, false},
		{"rotated: new key signs", []Key{k2, k1}, []Key{k2, k1}, 0, nil, false},
		{"unknown key", []Key{k2}, []Key{k1}, 0, nil, true},
		{"expired", []Key{k1}, []Key{k1}, 5 * time.Minute, nil, true},
		{"from the future", []Key{k1}, []Key{k1}, -2 * time.Minute, nil, true},
		{"value changed", []Key{k1}, []Key{k1}, 0, func(h http.Header) { h.Set("X-Sluice-User", "mallory") }, true},
		{"header added", []Key{k1}, []Key{k1}, 0, func(h http.Header) { h.Del("X-Sluice-Email"); h.Set("X-Sluice-Email", "") }, true},
		{"header removed", []Key{k1}, []Key{k1}, 0, func(h http.Header) { h.Del("X-Sluice-Email") }, true},
		{"value appended", []Key{k1}, []Key{k1}, 0, func(h http.Header) { h.Add("X-Sluice-User", "root") }, true},
		{"no signature", []Key{k1}, []Key{k1}, 0, func(h http.Header) { h.Del(DefaultSignatureHeader) }, true},
	}
	for _, jwt := range []bool{false, true} {
		for _, tt := range tests {
			name := tt.name
			if jwt {
				name = "jwt/" + name
			}
			t.Run(name, func(t *testing.T) {
				signer := &Signer{Names: names, Keys: tt.signKeys, JWT: jwt, now: func() time.Time { return t0 }}
				h := identity()
				if err := signer.Sign(h); err != nil {
					t.Fatal(err)
				}
				if tt.tamper != nil {
					tt.tamper(h)
				}
				verifier := &Signer{Names: names, Keys: tt.verKeys, JWT: jwt, now: func() time.Time { return t0.Add(tt.verifyAt) }}
				got, err := verifier.Verify(h)
				if tt.wantErr {
					if !errors.Is(err, ErrBadSignature) {
						t.Fatalf("Verify err = %v, want ErrBadSignature", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Verify: %v (header %q)", err, h.Get(DefaultSignatureHeader))
				}
				want := map[string]string{"x-sluice-user": "alice", "x-sluice-email": "alice@example.com"}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("identity (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// A Signer without a usable key signs nothing, and verifies nothing in
// either format.
func TestSignerNoKey(t *testing.T) {
	empty := Key{ID: "k0"}
	for _, keys := range [][]Key{nil, {empty}} {
		if err := (&Signer{Keys: keys}).Sign(http.Header{}); err == nil {
			t.Errorf("Sign with keys %v succeeded", keys)
		}
	}
	for _, jwt := range []bool{false, true} {
		// Made with the empty key, by hand: Sign refuses to.
		h := http.Header{"X-User": {"root"}}
		s := &Signer{Names: []string{"X-User"}, Keys: []Key{empty}, JWT: jwt}
		if jwt {
			tok, _ := hs256.SignKeyID("k0", []byte{0}, jwtClaims{Expires: 1 << 40, Headers: map[string]string{"x-user": "root"}})
			h.Set(DefaultSignatureHeader, tok)
		} else {
			h.Set(DefaultSignatureHeader, "v1;kid=k0;t="+strconv.FormatInt(time.Now().Unix(), 10)+";sig="+s.mac(nil, "k0", strconv.FormatInt(time.Now().Unix(), 10), h))
		}
		if _, err := s.Verify(h); !errors.Is(err, ErrBadSignature) {
			t.Errorf("jwt=%v: a signature under an empty key verified (err %v)", jwt, err)
		}
	}
}

func TestJWTAlgNone(t *testing.T) {
	k := Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s := &Signer{Names: []string{"X-User"}, Keys: []Key{k}, JWT: true}
	// {"alg":"none","kid":"k1","typ":"JWT"} . {"iat":1,"exp":9999999999,"hdr":{"x-user":"root"}} .
	tok := "eyJhbGciOiJub25lIiwia2lkIjoiazEiLCJ0eXAiOiJKV1QifQ.eyJpYXQiOjEsImV4cCI6OTk5OTk5OTk5OSwiaGRyIjp7IngtdXNlciI6InJvb3QifX0."
	h := http.Header{"X-User": {"root"}, DefaultSignatureHeader: {tok}}
	if _, err := s.Verify(h); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "algorithm") {
		t.Errorf("alg none: err = %v, want algorithm refused", err)
	}
}

func FuzzVerify(f *testing.F) {
	k := Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	for _, jwt := range []bool{false, true} {
		s := &Signer{Names: []string{"X-User"}, Keys: []Key{k}, JWT: jwt}
		h := http.Header{"X-User": {"alice"}}
		_ = s.Sign(h)
		f.Add(h.Get(DefaultSignatureHeader), "alice", jwt)
	}
	f.Add("v1;kid=k1;t=x;sig=", "", false)
	f.Add("a.b.c", "", true)
	f.Fuzz(func(t *testing.T, sig, user string, jwt bool) {
		s := &Signer{Names: []string{"X-User"}, Keys: []Key{k}, JWT: jwt}
		h := http.Header{"X-User": {user}, DefaultSignatureHeader: {sig}}
		got, err := s.Verify(h)
		if err != nil {
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("error not ErrBadSignature: %v", err)
			}
			return
		}
		if got["x-user"] != user {
			t.Fatalf("verified identity %q, header %q", got["x-user"], user)
		}
	})
}

// The verifier's MaxAge bounds a JWT too, whatever "exp" the signer wrote.
func TestSignerVerifierMaxAge(t *testing.T) {
	k := Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	t0 := time.Unix(1_700_000_000, 0)
	names := []string{"X-Sluice-User"}
	for _, jwt := range []bool{false, true} {
		signer := &Signer{Names: names, Keys: []Key{k}, JWT: jwt, MaxAge: time.Hour, now: func() time.Time { return t0 }}
		h := http.Header{"X-Sluice-User": {"alice"}}
		if err := signer.Sign(h); err != nil {
			t.Fatal(err)
		}
		verifier := &Signer{Names: names, Keys: []Key{k}, JWT: jwt, MaxAge: time.Minute, now: func() time.Time { return t0.Add(10 * time.Minute) }}
		if _, err := verifier.Verify(h); !errors.Is(err, ErrBadSignature) {
			t.Errorf("jwt=%v: a 10-minute-old signature passed a verifier with MaxAge 1m (err %v)", jwt, err)
		}
	}
}
