package balance

import (
	"io"
	"net/http"
	"testing"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// With KeepEncodedSlashes, StripPrefix works on the escaped path: an
// encoded slash is one segment to the Proxy's routes, and stays encoded
// on the way upstream. Before, "/app%2F..%2Fsecret" matched "/app" on the
// decoded path and reached the target as "/v2/../secret".
func TestPoolStripPrefixKeepsEncodedSlash(t *testing.T) {
	leaktest.Check(t)
	got := make(chan string, 4)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got <- r.RequestURI })
	pool := &Pool{Logger: quiet(), StripPrefix: "/app"}
	mustAdd(t, pool, "a", up.URL+"/v2")
	px := poolServer(t, pool, func(p *sluice.Proxy) { p.KeepEncodedSlashes = true })
	c := client(t)
	for path, want := range map[string]string{
		"/app%2F..%2Fsecret": "/v2/app%2F..%2Fsecret",
		"/app/a%2Fb":         "/v2/a%2Fb",
	} {
		res, err := c.Get(px + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if u := <-got; u != want {
			t.Errorf("GET %s reached the target as %q, want %q", path, u, want)
		}
	}
}
