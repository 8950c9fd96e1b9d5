package sluice_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/sluiceproxy/sluice"
)

// demo starts upstream and a Proxy in front of it, lets setup add routes,
// and returns the proxy's URL and a function that stops everything.
func demo(upstream http.HandlerFunc, setup func(p *sluice.Proxy)) (string, func()) {
	up := httptest.NewServer(upstream)
	target, _ := url.Parse(up.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	setup(p)
	ps := httptest.NewServer(p)
	return ps.URL, func() {
		ps.Close()
		p.CloseIdleConnections()
		up.Close()
	}
}

// An Interceptor answers a captured URL locally; the upstream never sees
// it. Everything else passes through.
func ExampleLocal() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from upstream")
	}, func(p *sluice.Proxy) {
		p.Handle("GET /healthz", sluice.Local(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		})))
	})
	defer stop()
	fmt.Println(get(base + "/healthz"))
	fmt.Println(get(base + "/page"))
	// Output:
	// 200 ok
	// 200 from upstream
}

// An Interceptor edits the outbound request (method, URL, headers) and
// forwards it.
func ExampleInterceptorFunc() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s tenant=%s", r.Method, r.URL.Path, r.Header.Get("X-Tenant"))
	}, func(p *sluice.Proxy) {
		p.HandleFunc("GET /t/{tenant}/{rest...}", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
			pr.Out.URL.Path = "/" + pr.Out.PathValue("rest")
			pr.Out.Header.Set("X-Tenant", pr.Out.PathValue("tenant"))
			return pr.Forward(w)
		})
	})
	defer stop()
	fmt.Println(get(base + "/t/acme/reports/7"))
	// Output:
	// 200 GET /reports/7 tenant=acme
}

// RewriteJSON rewrites a JSON request body within a limit; on error the
// body is left untouched, so the request can still be forwarded as is.
func ExampleRewriteJSON() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "upstream got %s (Content-Length %d)", b, r.ContentLength)
	}, func(p *sluice.Proxy) {
		p.HandleFunc("POST /search", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
			err := sluice.RewriteJSON(pr, 64<<10, func(q *map[string]json.RawMessage) error {
				(*q)["size"] = json.RawMessage("50")
				return nil
			})
			if err != nil {
				fmt.Println("not rewritten:", sluice.StatusFor(err))
			}
			return pr.Forward(w)
		})
	})
	defer stop()
	for _, body := range []string{`{"q":"go","size":5}`, `{"q":`} {
		res, _ := http.Post(base+"/search", "application/json", strings.NewReader(body))
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Println(string(b))
	}
	// Output:
	// upstream got {"q":"go","size":50} (Content-Length 20)
	// not rewritten: 400
	// upstream got {"q": (Content-Length 5)
}

// An Interceptor can call the upstream itself through the Proxy's engine
// (same pool, Director, retries and error mapping), inspect the response
// and decide what the client gets.
func ExampleProxyRequest_RoundTrip_quota() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Quota-Left", "0")
		io.WriteString(w, "expensive result")
	}, func(p *sluice.Proxy) {
		p.HandleFunc("/", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
			res, err := pr.RoundTrip()
			if err != nil {
				return err
			}
			defer res.Body.Close()
			if res.Header.Get("X-Quota-Left") == "0" {
				return sluice.Errorf(http.StatusTooManyRequests, "quota exhausted")
			}
			return pr.WriteResponse(w, res)
		})
	})
	defer stop()
	fmt.Println(get(base + "/"))
	// Output:
	// 429 429 Too Many Requests
}

// ResponseTransform buffers a response within a limit, decodes gzip or
// deflate and fixes Content-Length, Content-Encoding and ETag.
func ExampleResponseTransform() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v7"`)
		io.WriteString(w, `{"items":[3,1,2]}`)
	}, func(p *sluice.Proxy) {
		p.Handle("GET /items", &sluice.ResponseTransform{
			MaxBody: 1 << 20,
			Func: func(res *http.Response, body []byte) ([]byte, error) {
				var doc struct{ Items []int }
				if json.Unmarshal(body, &doc) != nil {
					return body, nil // not ours: relayed untouched
				}
				doc.Items = doc.Items[:2]
				return json.Marshal(map[string]any{"items": doc.Items, "cut": true})
			},
		})
	})
	defer stop()
	res, _ := http.Get(base + "/items")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(string(b))
	fmt.Println(res.Header.Get("Content-Length"), res.Header.Get("Etag"))
	// Output:
	// {"cut":true,"items":[3,1]}
	// 26 W/"v7"
}

// ModifyResponse changes response headers only; the body streams through
// untouched.
func ExampleOnResponse() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "app/1.2.3")
		io.WriteString(w, "body")
	}, func(p *sluice.Proxy) {
		p.Handle("/", sluice.OnResponse(func(res *http.Response) error {
			res.Header.Del("Server")
			res.Header.Set("Cache-Control", "no-store")
			return nil
		}))
	})
	defer stop()
	res, _ := http.Get(base + "/")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Printf("%q %q %s\n", res.Header.Get("Server"), res.Header.Get("Cache-Control"), b)
	// Output:
	// "" "no-store" body
}

// HTMLRewriter rewrites links and injects a snippet while the page
// streams, with bounded memory.
func ExampleHTMLRewriter() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<html><body><a href="/docs">docs</a></body></html>`)
	}, func(p *sluice.Proxy) {
		rw := &sluice.HTMLRewriter{
			Attr: func(tag, key, val string) string {
				if tag == "a" && key == "href" && strings.HasPrefix(val, "/") {
					return "/app" + val
				}
				return val
			},
			Inject: `<footer>via sluice</footer>`,
		}
		p.Handle("/", sluice.Filter(rw.Filter))
	})
	defer stop()
	fmt.Println(get(base + "/"))
	// Output:
	// 200 <html><body><a href="/app/docs">docs</a><footer>via sluice</footer></body></html>
}

// LineFilter redacts a pattern in line-based streams (NDJSON, server-sent
// events) as they flow.
func ExampleLineFilter() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, "{\"user\":\"ann\",\"token\":\"sk-12345\"}\n{\"user\":\"bob\"}\n")
	}, func(p *sluice.Proxy) {
		secret := regexp.MustCompile(`sk-[0-9a-z]+`)
		lf := &sluice.LineFilter{
			Func:  func(line []byte) []byte { return secret.ReplaceAll(line, []byte("sk-***")) },
			Match: func(res *http.Response) bool { return res.Header.Get("Content-Type") == "application/x-ndjson" },
		}
		p.Handle("/", sluice.Filter(lf.Filter))
	})
	defer stop()
	fmt.Print(get(base + "/"))
	// Output:
	// 200 {"user":"ann","token":"sk-***"}
	// {"user":"bob"}
}

// BodyFilterFunc builds a streaming filter from a function: it sees each
// chunk and an end-of-stream signal.
func ExampleBodyFilterFunc() {
	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "line one\nline two\n")
	}, func(p *sluice.Proxy) {
		p.Handle("/", sluice.Filter(func(res *http.Response) sluice.BodyFilter {
			n := 0
			return sluice.BodyFilterFunc(func(dst io.Writer, chunk []byte, end bool) error {
				n += len(chunk)
				dst.Write(chunk)
				if end {
					fmt.Fprintf(dst, "-- %d bytes\n", n)
				}
				return nil
			})
		}))
	})
	defer stop()
	fmt.Print(get(base + "/"))
	// Output:
	// 200 line one
	// line two
	// -- 18 bytes
}

// Sendfile lets the application name a file (X-Accel-Redirect) that the
// proxy serves itself, with Range support; the header never reaches the
// client.
func ExampleSendfile() {
	dir, _ := os.MkdirTemp("", "sendfile")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "big.bin"), []byte("0123456789"), 0o644)

	base, stop := demo(func(w http.ResponseWriter, r *http.Request) {
		// The application checks access, then delegates the download.
		w.Header().Set("X-Accel-Redirect", "/big.bin")
		w.Header().Set("Content-Type", "application/octet-stream")
	}, func(p *sluice.Proxy) {
		p.Handle("GET /downloads/", &sluice.Sendfile{Dir: dir})
	})
	defer stop()
	req, _ := http.NewRequest("GET", base+"/downloads/42", nil)
	req.Header.Set("Range", "bytes=3-5")
	res, _ := http.DefaultClient.Do(req)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, string(b), res.Header.Get("Content-Range"), res.Header.Get("X-Accel-Redirect") == "")
	// Output:
	// 206 345 bytes 3-5/10 true
}
