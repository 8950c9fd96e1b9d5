package urlpath

import (
	"net/url"
	"testing"
)

func TestHasPrefix(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"/api", "/api", true},
		{"/api/x", "/api", true},
		{"/apix", "/api", false},
		{"/api", "/api/", false},
		{"/api/", "/api/", true},
		{"/api/x", "/api/", true},
		{"/", "/", true},
		{"/x", "/", true},
		{"/other", "/api", false},
	}
	for _, tt := range tests {
		if got := HasPrefix(tt.path, tt.prefix); got != tt.want {
			t.Errorf("HasPrefix(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}

func TestStripPrefix(t *testing.T) {
	tests := []struct {
		path, rawPath, prefix string
		wantPath, wantRaw     string
	}{
		{"/api/users", "", "/api", "/users", ""},
		{"/api/users", "", "/api/", "/users", ""},
		{"/api", "", "/api", "/", ""},
		{"/api/", "", "/api", "/", ""},
		{"/x", "", "", "/x", ""},
		{"/x", "", "/", "/x", ""},
		{"/api/a b", "/api/a%20b", "/api", "/a b", ""}, // RawPath is the default encoding: dropped
		{"/api/a/b", "/api/a%2Fb", "/api", "/a/b", "/a%2Fb"},
		{"/a b/x", "/a%20b/x", "/a%20b", "/x", ""}, // the prefix in escaped form
		// An encoded slash stays one: stripping the decoded path made
		// "/api%2F..%2Fsecret" the "/../secret" of the upstream.
		{"/api/secret", "/api%2Fsecret", "/api", "//secret", "/%2Fsecret"},
		{"/api/../secret", "/api%2F..%2Fsecret", "/api", "//../secret", "/%2F..%2Fsecret"},
	}
	for _, tt := range tests {
		u := &url.URL{Path: tt.path, RawPath: tt.rawPath}
		StripPrefix(u, tt.prefix)
		if u.Path != tt.wantPath || u.RawPath != tt.wantRaw {
			t.Errorf("StripPrefix(%q [%q], %q) = %q [%q], want %q [%q]", tt.path, tt.rawPath, tt.prefix, u.Path, u.RawPath, tt.wantPath, tt.wantRaw)
		}
	}
}

func TestJoin(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"/v2", "/users", "/v2/users"},
		{"/v2/", "/users", "/v2/users"},
		{"/v2", "users", "/v2/users"},
		{"/v2/", "users", "/v2/users"},
		{"", "/x", "/x"},
		{"/", "/", "/"},
	}
	for _, tt := range tests {
		if got := Join(tt.a, tt.b); got != tt.want {
			t.Errorf("Join(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
}
