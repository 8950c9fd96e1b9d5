package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sluiceproxy/sluice/examples/internal/demo"
)

// startDemo starts the embedded upstream the starter proxies when no
// -upstream is given.
func startDemo() (*demo.Server, error) { return demo.Start(demoHandler()) }

const demoIndex = `<!doctype html>
<title>sluice demo upstream</title>
<h1>sluice demo upstream</h1>
<p>Everything here came through the proxy untouched.</p>
<ul>
<li><a href="/small">/small</a>: 100 bytes</li>
<li><a href="/sse">/sse</a>: server-sent events, one a second (flushed as they arrive)</li>
<li><a href="/download?n=1073741824">/download?n=1073741824</a>: a 1 GiB streamed download</li>
<li>/echo: POST or PUT a body, get it back (curl -T file http://PROXY/echo)</li>
<li><a href="/headers">/headers</a>: the request headers as the upstream saw them</li>
</ul>
`

func demoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, demoIndex)
	})
	small := make([]byte, 100)
	for i := range small {
		small[i] = 'a' + byte(i%26)
	}
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(small)
	})
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := 0; i < 30; i++ {
			fmt.Fprintf(w, "data: tick %d at %s\n\n", i, time.Now().Format(time.RFC3339))
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	})
	mux.HandleFunc("GET /download", demo.Download)
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		if r.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		http.NewResponseController(w).EnableFullDuplex()
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("GET /headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s %s %s\nHost: %s\n", r.Method, r.RequestURI, r.Proto, r.Host)
		r.Header.Write(w)
	})
	return mux
}
