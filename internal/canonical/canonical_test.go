package canonical

import (
	"errors"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	tests := []struct {
		in, want string
		keep     bool
		err      error
	}{
		{in: "/", want: "/"},
		{in: "/a/b", want: "/a/b"},
		{in: "/a/b/", want: "/a/b/"},
		{in: "/app/../secret", want: "/secret"},
		{in: "/app/%2e%2E/secret", want: "/secret"},
		{in: "/a/./b/.", want: "/a/b/"},
		{in: "/a/b/..", want: "/a/"},
		{in: "//admin//users", want: "/admin/users"},
		{in: "/%61dmin", want: "/admin"},
		{in: "/a%7eb", want: "/a~b"},
		{in: "/a%3fb", want: "/a%3Fb"},
		{in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{in: "/a b", want: "/a%20b"},
		{in: "/a;x/b", want: "/a;x/b"},
		{in: "/.well-known/x", want: "/.well-known/x"},
		{in: "/...", want: "/..."},
		{in: "/a/..b", want: "/a/..b"},
		{in: "/..", err: ErrAboveRoot},
		{in: "/a/../../b", err: ErrAboveRoot},
		{in: "/a%2Fb", err: ErrEncodedSlash},
		{in: "/a%2fb", want: "/a%2Fb", keep: true},
		{in: "/a%2F..%2Fb", want: "/a%2F..%2Fb", keep: true},
		{in: `/a\b`, err: ErrBackslash},
		{in: "/a%5cb", err: ErrBackslash},
		{in: "/a%00b", err: ErrEncodedNUL},
		{in: "/a%zz", err: ErrBadEscape},
		{in: "/a%2", err: ErrBadEscape},
		{in: "a/b", err: ErrNotAbsolute},
		{in: "", err: ErrNotAbsolute},
	}
	for _, tt := range tests {
		got, err := Path(tt.in, tt.keep)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("Path(%q, %v) = %q, %v; want %q, %v", tt.in, tt.keep, got, err, tt.want, tt.err)
		}
	}
}

func TestPathCanonicalDoesNotAllocate(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		if _, err := Path("/api/v1/users/42/", false); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("Path of a canonical path: %v allocations, want 0", n)
	}
}

func TestStripParams(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b":          "/a/b",
		"/admin;x/user": "/admin/user",
		"/a;b;c/d;e":    "/a/d",
		"/..;/admin":    "/../admin",
	} {
		if got := StripParams(in); got != want {
			t.Errorf("StripParams(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHost(t *testing.T) {
	tests := []struct {
		in, scheme, want string
		bad              bool
	}{
		{in: "", want: ""},
		{in: "Example.COM", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "example.com.:8080", want: "example.com:8080"},
		{in: "example.com:80", scheme: "http", want: "example.com"},
		{in: "example.com:443", scheme: "https", want: "example.com"},
		{in: "example.com:443", scheme: "http", want: "example.com:443"},
		{in: "example.com:0080", scheme: "http", want: "example.com"},
		{in: "example.com:", want: "example.com"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "XN--BCHER-KVA.example", want: "xn--bcher-kva.example"},
		{in: "[2001:DB8:0::1]:8080", want: "[2001:db8::1]:8080"},
		{in: "[::ffff:1.2.3.4]", want: "[::ffff:1.2.3.4]"},
		{in: "127.0.0.1:80", scheme: "http", want: "127.0.0.1"},
		{in: "my_host.internal", want: "my_host.internal"},
		{in: "2001:db8::1", bad: true},
		{in: "[fe80::1%25eth0]", bad: true},
		{in: "a..b", bad: true},
		{in: "a b", bad: true},
		{in: "a/b", bad: true},
		{in: "a@b", bad: true},
		{in: "host:99999", bad: true},
		{in: "host:8x", bad: true},
		{in: "[::1", bad: true},
		{in: "[::1]x", bad: true},
		{in: ".", bad: true},
	}
	for _, tt := range tests {
		got, err := Host(tt.in, tt.scheme)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("Host(%q, %q) = %q, %v; want %q, bad=%v", tt.in, tt.scheme, got, err, tt.want, tt.bad)
		}
	}
}

// resolve is the reference the fuzz target checks Path against: the
// decoded path resolved the way a server that decodes before resolving
// does (path.Clean, keeping a trailing slash that a final "/", "." or
// ".." implies).
func resolve(decoded string) string {
	c := path.Clean(decoded)
	last := decoded[strings.LastIndexByte(decoded, '/')+1:]
	if c != "/" && (last == "" || last == "." || last == "..") {
		c += "/"
	}
	return c
}

func FuzzPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x//y/", "/%2e%2E/", "/a%2Fb", "/a;b/..;/c", "/a%zz", "/ä/%C3%A4", "/a/./b/."} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, keep bool) {
		got, err := Path(in, keep)
		if err != nil {
			return
		}
		again, err := Path(got, keep)
		if err != nil || again != got {
			t.Fatalf("not idempotent: Path(%q) = %q, Path(that) = %q, %v", in, got, again, err)
		}
		if !isCanonical(got) && !(keep && strings.Contains(got, "%")) {
			// Only percent-encodings of reserved or non-ASCII bytes may remain.
			for i := 0; i < len(got); i++ {
				if got[i] == '%' && isUnreserved(unhex(got[i+1])<<4|unhex(got[i+2])) {
					t.Fatalf("Path(%q) = %q keeps an encoded unreserved byte", in, got)
				}
			}
		}
		if strings.Contains(got, "//") || strings.Contains(got, `\`) || strings.Contains(got, "/./") || strings.Contains(got, "/../") ||
			strings.HasSuffix(got, "/.") || strings.HasSuffix(got, "/..") {
			t.Fatalf("Path(%q) = %q is not normalized", in, got)
		}
		if !keep && strings.Contains(strings.ToUpper(got), "%2F") {
			t.Fatalf("Path(%q) = %q keeps an encoded slash", in, got)
		}
		u, err := url.Parse(got)
		if err != nil || u.EscapedPath() != got {
			t.Fatalf("Path(%q) = %q is not a valid escaped path for net/url: %v (%q)", in, got, err, u.EscapedPath())
		}
		if keep {
			return
		}
		dec, err1 := url.PathUnescape(in)
		gotDec, err2 := url.PathUnescape(got)
		if err1 != nil || err2 != nil {
			t.Fatalf("unescape: %v, %v", err1, err2)
		}
		if want := resolve(dec); gotDec != want {
			t.Fatalf("Path(%q) decodes to %q; a decoding server resolves %q", in, gotDec, want)
		}
	})
}

func FuzzHost(f *testing.F) {
	for _, s := range []string{"Example.com.", "[::1]:80", "bücher.example:443", "1.2.3.4:0080", "a_b:1"} {
		f.Add(s, "http")
	}
	f.Fuzz(func(t *testing.T, in, scheme string) {
		got, err := Host(in, scheme)
		if err != nil {
			return
		}
		again, err := Host(got, scheme)
		if err != nil || again != got {
			t.Fatalf("not idempotent: Host(%q) = %q, Host(that) = %q, %v", in, got, again, err)
		}
		if strings.ToLower(got) != got || strings.HasSuffix(got, ".") {
			t.Fatalf("Host(%q) = %q is not lower case without trailing dot", in, got)
		}
		u, err := url.Parse("http://" + got + "/")
		if err != nil || u.Host != got {
			t.Fatalf("Host(%q) = %q does not parse as an authority: %v", in, got, err)
		}
	})
}

// parseAddr, the hot path's shortcut, decides as netip.ParseAddr does on
// every host Host gives it: an IPv4 literal netip accepts is accepted as
// the same address (a route and the upstream must never disagree on
// whether a host is an address), and nothing netip refuses is accepted.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "127.0.0.1", "::1", "::ffff:1.2.3.4", "fe80::1%eth0", "1.2.3.4%x", "example.com", "0x7f.1", "01.2.3.4", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAddr(s)
		want, werr := netip.ParseAddr(s)
		if err == nil && (werr != nil || got != want) {
			t.Fatalf("parseAddr(%q) = %v, netip.ParseAddr = %v, %v", s, got, want, werr)
		}
		if werr == nil && want.Is4() && (err != nil || got != want) {
			t.Fatalf("parseAddr(%q) = %v, %v; netip.ParseAddr = %v", s, got, err, want)
		}
	})
}
