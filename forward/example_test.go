package forward_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/forward"
)

func ExampleDirector() {
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "site: %s", r.URL.Path)
	}))
	defer site.Close()
	front := httptest.NewServer(&sluice.Proxy{
		Authorizer: sluice.AllowFrom(netip.MustParsePrefix("127.0.0.0/8")),
		Director: &forward.Director{
			// The example's site is on loopback, which a forward proxy
			// refuses by default.
			AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		},
	})
	defer front.Close()

	proxyURL, _ := url.Parse(front.URL)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	res, err := c.Get(site.URL + "/through/the/proxy")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	fmt.Println(res.StatusCode, string(b))
	// Output:
	// 200 site: /through/the/proxy
}
