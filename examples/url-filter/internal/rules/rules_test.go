package rules

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestServe(t *testing.T) {
	r := Default
	r.Channels = true
	in := strings.Join([]string{
		"0 http://example.com/ 10.0.0.1/- - GET myip=- myport=-",
		"1 http://ads.example/x 10.0.0.1/- - GET",
		"2 http://a.Blocked.Example/ 10.0.0.1/- - GET",
		"3 http://notblocked.example/ 10.0.0.1/- - GET",
		"4 http://example.com/old/a?b=c 10.0.0.1/- - GET",
		"5 http://example.com/moved/z 10.0.0.1/- - GET",
		"6 not-a-url 10.0.0.1/- - GET",
		"7",
		"8 http://example.com/whoami 10.0.0.1/- - GET", // test hooks off: plain OK
	}, "\n") + "\n"
	var out strings.Builder
	if err := r.Serve(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"0 OK",
		`1 ERR message="blocked by url-filter: ads.example"`,
		`2 ERR message="blocked by url-filter: a.blocked.example"`,
		"3 OK",
		"4 OK rewrite-url=http://example.com/new/a?b=c",
		"5 OK status=301 url=http://example.com/new/z",
		`6 BH message="unparseable URL"`,
		`7 BH message="empty request"`,
		"8 OK",
	}
	if diff := cmp.Diff(want, strings.Split(strings.TrimSpace(out.String()), "\n")); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
}

// TestBlockSpellings: a blocked host is blocked however the client spells
// it (the helper gets the host as sent; Squid would have normalized it),
// and however the block list spells it.
func TestBlockSpellings(t *testing.T) {
	r := Rules{Block: []string{"blocked.example", "Ads.Example.", ".tracker.example"}}
	r.normalize()
	tests := []struct {
		url  string
		want string // answer prefix
	}{
		{"blocked.example:443", "ERR"}, // CONNECT
		{"A.Ads.Example.:8443", "ERR"}, // CONNECT
		{"example.com:443", "OK"},      // CONNECT
		{"example.com", "BH"},          // CONNECT without a port
		{"http://blocked.example/", "ERR"},
		{"http://Blocked.Example./", "ERR"},
		{"http://blocked.example.:80/", "ERR"},
		{"http://BLOCKED.EXAMPLE.:8080/x", "ERR"},
		{"http://blocked.example../", "ERR"},
		{"http://a.blocked.example./", "ERR"},
		{"http://blocked\uff0eexample/", "ERR"}, // fullwidth full stop, mapped to "." by IDNA
		{"http://BLOCKED\u3002example/", "ERR"}, // ideographic full stop
		{"http://ads.example/", "ERR"},
		{"http://x.ads.example.:443/", "ERR"},
		{"http://tracker.example/", "ERR"},
		{"http://notblocked.example./", "OK"},
		{"http://blocked.example.org/", "OK"},
		{"http://example.com:80/", "OK"},
		{"http://b\u00fccher.example/", "OK"},
		{"http://[::1]:80/", "OK"},
	}
	for _, tt := range tests {
		method := "GET"
		if !strings.Contains(tt.url, "://") {
			method = "CONNECT"
		}
		got, _ := r.decide(tt.url, "-", method)
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: %s, want %s", tt.url, got, tt.want)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"Blocked.Example.":       "blocked.example",
		"blocked.example.:80":    "blocked.example",
		"[::1]:80":               "::1",
		"B\u00dcCHER.example":    "xn--bcher-kva.example",
		"xn--BCHER-KVA.example.": "xn--bcher-kva.example",
		"a\uff0eb":               "a.b",
		"under_score.example":    "under_score.example",
	} {
		if got, err := NormalizeHost(in); err != nil || got != want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
