package sluice

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIdentitySigner(t *testing.T) {
	k1 := SigningKey{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	k2 := SigningKey{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
	t0 := time.Unix(1_700_000_000, 0)
	names := []string{"X-Sluice-User", "X-Sluice-Email"}
	identity := func() http.Header {
		return http.Header{"X-Sluice-User": {"alice"}, "X-Sluice-Email": {"alice@example.com"}}
	}
	tests := []struct {
		name     string
		signKeys []SigningKey
		verKeys  []SigningKey
		verifyAt time.Duration
		tamper   func(h http.Header)
		wantErr  bool
	}{
		{"valid", []SigningKey{k1}, []SigningKey{k1}, time.Minute, nil, false},
		{"rotated: old key still verifies", []SigningKey{k1}, []SigningKey{k2, k1}, 0, nil, false},
		{"rotated: new key signs", []SigningKey{k2, k1}, []SigningKey{k2, k1}, 0, nil, false},
		{"unknown key", []SigningKey{k2}, []SigningKey{k1}, 0, nil, true},
		{"expired", []SigningKey{k1}, []SigningKey{k1}, 5 * time.Minute, nil, true},
		{"from the future", []SigningKey{k1}, []SigningKey{k1}, -2 * time.Minute, nil, true},
		{"value changed", []SigningKey{k1}, []SigningKey{k1}, 0, func(h http.Header) { h.Set("X-Sluice-User", "mallory") }, true},
		{"header added", []SigningKey{k1}, []SigningKey{k1}, 0, func(h http.Header) { h.Del("X-Sluice-Email"); h.Set("X-Sluice-Email", "") }, true},
		{"header removed", []SigningKey{k1}, []SigningKey{k1}, 0, func(h http.Header) { h.Del("X-Sluice-Email") }, true},
		{"value appended", []SigningKey{k1}, []SigningKey{k1}, 0, func(h http.Header) { h.Add("X-Sluice-User", "root") }, true},
		{"no signature", []SigningKey{k1}, []SigningKey{k1}, 0, func(h http.Header) { h.Del(DefaultSignatureHeader) }, true},
	}
	for _, jwt := range []bool{false, true} {
		for _, tt := range tests {
			name := tt.name
			if jwt {
				name = "jwt/" + name
			}
			t.Run(name, func(t *testing.T) {
				signer := &IdentitySigner{Names: names, Keys: tt.signKeys, JWT: jwt, now: func() time.Time { return t0 }}
				h := identity()
				if err := signer.Sign(h); err != nil {
					t.Fatal(err)
				}
				if tt.tamper != nil {
					tt.tamper(h)
				}
				verifier := &IdentitySigner{Names: names, Keys: tt.verKeys, JWT: jwt, now: func() time.Time { return t0.Add(tt.verifyAt) }}
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

func TestIdentitySignerNoKey(t *testing.T) {
	if err := (&IdentitySigner{}).Sign(http.Header{}); err == nil {
		t.Error("Sign without key succeeded")
	}
}

func TestJWTAlgNone(t *testing.T) {
	k := SigningKey{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	s := &IdentitySigner{Names: []string{"X-User"}, Keys: []SigningKey{k}, JWT: true}
	// {"alg":"none","kid":"k1","typ":"JWT"} . {"iat":1,"exp":9999999999,"hdr":{"x-user":"root"}} .
	tok := "eyJhbGciOiJub25lIiwia2lkIjoiazEiLCJ0eXAiOiJKV1QifQ.eyJpYXQiOjEsImV4cCI6OTk5OTk5OTk5OSwiaGRyIjp7IngtdXNlciI6InJvb3QifX0."
	h := http.Header{"X-User": {"root"}, DefaultSignatureHeader: {tok}}
	if _, err := s.Verify(h); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "algorithm") {
		t.Errorf("alg none: err = %v, want algorithm refused", err)
	}
}

func FuzzIdentityVerify(f *testing.F) {
	k := SigningKey{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	for _, jwt := range []bool{false, true} {
		s := &IdentitySigner{Names: []string{"X-User"}, Keys: []SigningKey{k}, JWT: jwt}
		h := http.Header{"X-User": {"alice"}}
		_ = s.Sign(h)
		f.Add(h.Get(DefaultSignatureHeader), "alice", jwt)
	}
	f.Add("v1;kid=k1;t=x;sig=", "", false)
	f.Add("a.b.c", "", true)
	f.Fuzz(func(t *testing.T, sig, user string, jwt bool) {
		s := &IdentitySigner{Names: []string{"X-User"}, Keys: []SigningKey{k}, JWT: jwt}
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
func TestIdentitySignerVerifierMaxAge(t *testing.T) {
	k := SigningKey{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	t0 := time.Unix(1_700_000_000, 0)
	names := []string{"X-Sluice-User"}
	for _, jwt := range []bool{false, true} {
		signer := &IdentitySigner{Names: names, Keys: []SigningKey{k}, JWT: jwt, MaxAge: time.Hour, now: func() time.Time { return t0 }}
		h := http.Header{"X-Sluice-User": {"alice"}}
		if err := signer.Sign(h); err != nil {
			t.Fatal(err)
		}
		verifier := &IdentitySigner{Names: names, Keys: []SigningKey{k}, JWT: jwt, MaxAge: time.Minute, now: func() time.Time { return t0.Add(10 * time.Minute) }}
		if _, err := verifier.Verify(h); !errors.Is(err, ErrBadSignature) {
			t.Errorf("jwt=%v: a 10-minute-old signature passed a verifier with MaxAge 1m (err %v)", jwt, err)
		}
	}
}
