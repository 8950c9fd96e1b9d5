package forward

import (
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/sluiceproxy/sluice"
)

func TestPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"93.184.215.14":            true,
		"2606:2800:21f:cb07::1":    true,
		"8.8.8.8":                  true,
		"127.0.0.1":                false,
		"127.255.255.254":          false,
		"::1":                      false,
		"::ffff:127.0.0.1":         false,
		"::ffff:8.8.8.8":           true,
		"10.1.2.3":                 false,
		"172.16.0.1":               false,
		"172.32.0.1":               true,
		"192.168.1.1":              false,
		"169.254.169.254":          false, // cloud metadata
		"fd00:ec2::254":            false, // AWS metadata over IPv6
		"100.100.100.200":          false, // Alibaba metadata (shared space)
		"fe80::1":                  false,
		"fe80::1%eth0":             false,
		"0.0.0.0":                  false,
		"0.1.2.3":                  false,
		"::":                       false,
		"224.0.0.1":                false,
		"ff02::1":                  false,
		"255.255.255.255":          false,
		"240.0.0.1":                false,
		"192.0.2.1":                false,
		"198.18.0.1":               false,
		"2001:db8::1":              false,
		"64:ff9b::7f00:1":          false, // NAT64 of 127.0.0.1
		"64:ff9b::808:808":         true,  // NAT64 of 8.8.8.8
		"2002:7f00:1::1":           false, // 6to4 of 127.0.0.1
		"2002:808:808::1":          true,
		"2001:0:4136:e378::1":      false, // Teredo
		"::127.0.0.1":              false, // IPv4-compatible
		"fec0::1":                  false,
		"64:ff9b:1::1":             false,
		"2a00:1450:4001:80b::200e": true,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v, want %v", addr, got, want)
		}
	}
	if Public(netip.Addr{}) {
		t.Error("Public(zero Addr) = true")
	}
}

func FuzzPublic(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1})
	f.Add(netip.MustParseAddr("64:ff9b::7f00:1").AsSlice())
	f.Add(netip.MustParseAddr("::ffff:10.0.0.1").AsSlice())
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		if !Public(a) {
			return
		}
		u := a.Unmap()
		if u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsMulticast() || u.IsUnspecified() || !u.IsGlobalUnicast() {
			t.Fatalf("Public(%v) although it is not a global unicast address", a)
		}
		if a.Is4In6() && !Public(u) {
			t.Fatalf("Public(%v) but not Public(%v)", a, u)
		}
	})
}

func request(method, target, host string) *sluice.ProxyRequest {
	r := httptest.NewRequest(method, target, nil)
	if host != "" {
		r.Host = host
	}
	if method == http.MethodConnect {
		r.URL.Host, r.Host = target, target
	}
	return &sluice.ProxyRequest{In: r, Out: r.Clone(r.Context())}
}

// Requests reach AllowHosts in canonical form (the Proxy's sanitizing
// step); patterns are put in that form too.
func TestAllowHosts(t *testing.T) {
	a := AllowHosts("Example.COM.", "*.Wild.Example", "192.0.2.1", "[2001:DB8:0::1]", "api.example:8443", "xn--bcher-kva.example", "BÜCHER.test")
	for _, tt := range []struct {
		method, target, host string
		want                 bool
	}{
		{"GET", "http://example.com/x", "", true},
		{"GET", "http://example.com:8080/x", "", true},
		{"GET", "/x", "example.com", true},
		{"CONNECT", "example.com:443", "", true},
		{"CONNECT", "a.b.wild.example:443", "", true},
		{"CONNECT", "wild.example:443", "", false},
		{"CONNECT", "notwild.example:443", "", false},
		{"CONNECT", "192.0.2.1:443", "", true},
		{"CONNECT", "[2001:db8::1]:443", "", true},
		{"CONNECT", "api.example:8443", "", true},
		{"CONNECT", "api.example:443", "", false},
		{"GET", "https://api.example/", "", false},
		{"GET", "http://xn--bcher-kva.example/", "", true},
		{"GET", "http://xn--bcher-kva.test/", "", true},
		{"GET", "http://example.org/", "", false},
		{"GET", "http://evil-example.com/", "", false},
		{"GET", "http://example.com.evil/", "", false},
		// The absolute-form target is where Director goes: a Host
		// header naming an allowed host does not vouch for another.
		{"GET", "http://example.org/", "example.com", false},
		{"GET", "http://example.com/", "example.org", true},
	} {
		d, err := a.Authorize(request(tt.method, tt.target, tt.host))
		if err != nil || d.Allow != tt.want {
			t.Errorf("%s %s (Host %q): allow %v, %v; want %v", tt.method, tt.target, tt.host, d.Allow, err, tt.want)
		}
	}
	for _, bad := range []string{"", "exa mple.com", "*.192.0.2.1", "2130706433", "a..b", "host:99999"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AllowHosts(%q) did not panic", bad)
				}
			}()
			AllowHosts(bad)
		}()
	}
}

func TestBasicAuth(t *testing.T) {
	a := BasicAuth("r", func(u, p string) bool { return u == "alice" && p == "pa:ss" })
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{"Basic " + enc("alice:pa:ss")}, true},
		{[]string{"basic   " + enc("alice:pa:ss") + " "}, true},
		{[]string{"Basic " + enc("alice:pa:ss"), "Basic " + enc("alice:pa:ss")}, false},
		{[]string{"Basic " + enc("alice:wrong")}, false},
		{[]string{"Basic " + enc("alice")}, false},
		{[]string{"Basic !!!"}, false},
		{[]string{"Bearer " + enc("alice:pa:ss")}, false},
	} {
		pr := request("GET", "http://example.com/", "")
		pr.In.Header["Proxy-Authorization"] = tt.header
		d, err := a.Authorize(pr)
		if err != nil || d.Allow != tt.want {
			t.Errorf("Proxy-Authorization %q: allow %v, %v; want %v", tt.header, d.Allow, err, tt.want)
		}
		if !d.Allow {
			w := httptest.NewRecorder()
			d.Response.ServeHTTP(w, pr.In)
			if w.Code != http.StatusProxyAuthRequired || w.Header().Get("Proxy-Authenticate") != `Basic realm="r", charset="UTF-8"` {
				t.Errorf("denial: %d %v", w.Code, w.Header())
			}
		}
	}
}

func TestMatchServerName(t *testing.T) {
	for _, tt := range []struct {
		authority, sni string
		hello          bool
		want           bool
	}{
		{"example.com:443", "example.com", true, true},
		{"example.com:443", "EXAMPLE.com.", true, true},
		{"example.com:443", "other.com", true, false},
		{"example.com:443", "", true, false},
		{"example.com:443", "", false, false},
		{"192.0.2.1:443", "", true, true},
		{"192.0.2.1:443", "example.com", true, false},
		{"[2001:db8::1]:443", "", true, true},
	} {
		var hello *tls.ClientHelloInfo
		if tt.hello {
			hello = &tls.ClientHelloInfo{ServerName: tt.sni}
		}
		err := MatchServerName(request("CONNECT", tt.authority, ""), hello)
		if (err == nil) != tt.want {
			t.Errorf("CONNECT %s, SNI %q (hello %v): %v, want ok=%v", tt.authority, tt.sni, tt.hello, err, tt.want)
		}
	}
}
