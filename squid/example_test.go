package squid_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/squid"
)

// fetch sends req and returns the status and body as one line.
func fetch(c *http.Client, req *http.Request) string {
	res, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(b)))
}

func ExampleHelper() {
	// A Squid url_rewrite helper: one line in, one line out, with channel IDs.
	dir, _ := os.MkdirTemp("", "helper")
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "helper.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
while read -r id url rest; do
  case "$url" in
    */ads/*) echo "$id ERR message=\"no ads\"" ;;
    */old/*) echo "$id OK rewrite-url=${url%%/old/*}/new/" ;;
    *) echo "$id OK" ;;
  esac
done
`), 0o755)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app: %s", r.URL.Path)
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	h, err := squid.Start(squid.Config{Command: script, Children: 2, Concurrency: 8})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	p := &sluice.Proxy{Authorizer: h, Director: h.Director(&sluice.SingleHost{Target: target})}
	front := httptest.NewServer(p)
	defer front.Close()

	for _, path := range []string{"/page", "/ads/banner", "/old/page"} {
		req, _ := http.NewRequest("GET", front.URL+path, nil)
		fmt.Println(fetch(http.DefaultClient, req))
	}
	// Output:
	// 200 app: /page
	// 403 no ads
	// 200 app: /new/
}
