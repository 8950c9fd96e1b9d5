package sluiceotel

import "testing"

func TestSplitHostPort(t *testing.T) {
	for _, tc := range []struct{ in, host, port string }{
		{"example.com:8080", "example.com", "8080"},
		{"example.com", "example.com", ""},
		{"127.0.0.1:80", "127.0.0.1", "80"},
		{"[::1]:443", "::1", "443"},
		{"[::1]", "::1", ""},
		{"/run/app.sock", "/run/app.sock", ""},
		{"", "", ""},
	} {
		if h, p := splitHostPort(tc.in); h != tc.host || p != tc.port {
			t.Errorf("splitHostPort(%q) = %q, %q; want %q, %q", tc.in, h, p, tc.host, tc.port)
		}
	}
}

func TestRedactQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"q=1", "q=1"},
		{"q=1&Signature=abc&X-Goog-Signature=d", "q=1&Signature=REDACTED&X-Goog-Signature=REDACTED"},
		{"AWSAccessKeyId=AK&sig=zz&flag", "AWSAccessKeyId=REDACTED&sig=REDACTED&flag"},
		{"%53ignature=abc", "%53ignature=REDACTED"},
	} {
		if got := redactQuery(tc.in); got != tc.want {
			t.Errorf("redactQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
