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
