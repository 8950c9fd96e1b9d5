package upload

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/hs256"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestVerify(t *testing.T) {
	now := time.Now()
	good := Claims{Issuer: Issuer, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(),
		Method: "PUT", Path: "/x", Files: []File{{Name: "x", Size: 3, RemoteID: "k"}}}
	sign := func(c any, key []byte) string {
		tok, err := hs256.Sign(key, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := good
	expired.ExpiresAt = now.Add(-time.Second).Unix()
	foreign := good
	foreign.Issuer = "someone"
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", sign(good, testKey), true},
		{"other key", sign(good, []byte("other")), false},
		{"expired", sign(expired, testKey), false},
		{"other issuer", sign(foreign, testKey), false},
		{"missing", "", false},
		{"garbage", "a.b.c", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/x", nil)
			if tt.token != "" {
				r.Header.Set(HeaderSignature, tt.token)
			}
			c, err := Verify(r, testKey)
			if !tt.ok {
				if !errors.Is(err, ErrSignature) {
					t.Fatalf("Verify: %v, want ErrSignature", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&good, c); diff != "" {
				t.Fatalf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	tok, _ := hs256.Sign(testKey, Claims{Issuer: Issuer, ExpiresAt: 1 << 40})
	f.Add(tok)
	f.Add("")
	f.Add("e30.e30.e30")
	f.Fuzz(func(t *testing.T, tok string) {
		r := httptest.NewRequest(http.MethodPut, "/", nil)
		r.Header.Set(HeaderSignature, tok)
		c, err := Verify(r, testKey)
		if err == nil && (c.Issuer != Issuer || c.ExpiresAt < time.Now().Unix()) {
			t.Fatalf("accepted claims %+v", c)
		}
	})
}

// A pre-authorization token is signed with the same key as an upload
// description: Verify must not take one for the other.
func TestVerifyRefusesPreauthorizeToken(t *testing.T) {
	now := time.Now().Unix()
	tok, err := hs256.Sign(testKey, Claims{Issuer: Issuer, IssuedAt: now, ExpiresAt: now + 60, Method: "POST", Path: "/up", Preauthorize: true})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "http://app.test/up", nil)
	r.Header.Set(HeaderSignature, tok)
	if c, err := Verify(r, testKey); !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify accepted a pre-authorization token: %+v, %v", c, err)
	}
}

// The converse: a description does not pass for a pre-authorization.
func TestVerifyPreauthorizeRefusesDescription(t *testing.T) {
	now := time.Now().Unix()
	tok, err := hs256.Sign(testKey, Claims{Issuer: Issuer, IssuedAt: now, ExpiresAt: now + 60, Method: "POST", Path: "/up",
		Files: []File{{Name: "a", RemoteID: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "http://app.test/up/authorize", nil)
	r.Header.Set(HeaderPreauthorize, tok)
	if m, p, err := VerifyPreauthorize(r, testKey); !errors.Is(err, ErrSignature) {
		t.Fatalf("VerifyPreauthorize accepted a description: %q %q, %v", m, p, err)
	}
}

// The claims are a wire format applications in other languages read: a
// description carries no "preauthorize", a pre-authorization no "files".
func TestClaimsWireFormat(t *testing.T) {
	tests := []struct {
		name   string
		claims Claims
		want   string
	}{
		{"description", Claims{Issuer: Issuer, IssuedAt: 1, ExpiresAt: 2, Method: "PUT", Path: "/f",
			Files: []File{{Field: "file", Name: "a.txt", ContentType: "text/plain", Size: 3, RemoteID: "k", RemoteURL: "http://s/k", SHA256: "ab", Duration: 0.5}}},
			`{"iss":"sluice","iat":1,"exp":2,"method":"PUT","path":"/f","files":[{"field":"file","name":"a.txt","content_type":"text/plain","size":3,"remote_id":"k","remote_url":"http://s/k","sha256":"ab","upload_duration":0.5}]}`},
		{"pre-authorization", Claims{Issuer: Issuer, IssuedAt: 1, ExpiresAt: 2, Method: "PUT", Path: "/f", Preauthorize: true},
			`{"iss":"sluice","iat":1,"exp":2,"method":"PUT","path":"/f","preauthorize":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(b)); diff != "" {
				t.Errorf("JSON (-want +got):\n%s", diff)
			}
		})
	}
}
