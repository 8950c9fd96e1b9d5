package main

import (
	"fmt"
	"io"
	"net/http"

	"github.com/sluiceproxy/sluice/examples/internal/demo"
)

// startDemo starts the embedded backend proxied when no -upstream is
// given: every page shows the request as the backend received it.
func startDemo() (*demo.Server, error) { return demo.Start(demoHandler()) }

const demoIndex = `<!doctype html>
<title>url-filter demo backend</title>
<h1>url-filter demo backend</h1>
<p>Every request here was approved by the url-filter helper.</p>
<ul>
<li><a href="/hello">/hello</a>: allowed as is</li>
<li><a href="/old/page">/old/page</a>: rewritten by the helper to /new/page (the browser still shows /old/page)</li>
<li><a href="/moved/page">/moved/page</a>: redirected by the helper (301) to /new/page</li>
<li>curl -x http://PROXY http://ads.example/: forward proxying to a blocked host (403)</li>
</ul>
`

func demoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, demoIndex)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s %s\nHost: %s\nX-Forwarded-For: %s\nCookie: %s\nVia: %s\n",
			r.Method, r.RequestURI, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("Cookie"), r.Header.Get("Via"))
	})
}
