package sluice

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func upper(_ *http.Response, body []byte) ([]byte, error) { return bytes.ToUpper(body), nil }

func TestResponseTransform(t *testing.T) {
	leaktest.Check(t)
	const page = "hello, transform"
	tests := []struct {
		name     string
		coding   string // upstream's Content-Encoding
		reencode bool
		fn       func(*http.Response, []byte) ([]byte, error)
		wantCE   string
		wantBody string
		wantETag string
	}{
		{"identity", "", false, upper, "", "HELLO, TRANSFORM", `W/"e1"`},
		{"gzip sent identity", "gzip", false, upper, "", "HELLO, TRANSFORM", `W/"e1"`},
		{"gzip reencoded", "gzip", true, upper, "gzip", "HELLO, TRANSFORM", `W/"e1"`},
		{"deflate reencoded", "deflate", true, upper, "deflate", "HELLO, TRANSFORM", `W/"e1"`},
		{"func drops etag", "", false, func(res *http.Response, b []byte) ([]byte, error) {
			res.Header.Del("Etag")
			return append(b, '!'), nil
		}, "", page + "!", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				body := []byte(page)
				if tt.coding != "" {
					body = compress(t, tt.coding, body)
					w.Header().Set("Content-Encoding", tt.coding)
				}
				w.Header().Set("ETag", `"e1"`)
				w.Header().Set("Accept-Ranges", "bytes")
				w.Header().Set("Content-Type", "text/plain")
				w.Write(body) // no Content-Length: chunked or sized by the server
			})
			ps, p, _ := newProxy(t, up.URL)
			p.Handle("/", &ResponseTransform{Func: tt.fn, Reencode: tt.reencode})
			req, _ := http.NewRequest("GET", ps.URL+"/x", nil)
			req.Header.Set("Accept-Encoding", "gzip, deflate")
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.ContentLength != int64(len(raw)) {
				t.Errorf("Content-Length %d for a %d-byte body", res.ContentLength, len(raw))
			}
			body := raw
			if ce := res.Header.Get("Content-Encoding"); ce != "" {
				dr, err := decoder(ce, bytes.NewReader(raw))
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(dr)
			}
			got := []string{res.Header.Get("Content-Encoding"), string(body), res.Header.Get("Etag"), res.Header.Get("Accept-Ranges")}
			want := []string{tt.wantCE, tt.wantBody, tt.wantETag, ""}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestResponseTransformUnchanged checks that a transform that leaves the
// body alone leaves the response byte for byte, compressed and validated
// as the upstream sent it.
func TestResponseTransformUnchanged(t *testing.T) {
	leaktest.Check(t)
	body := compress(t, "gzip", []byte(`not json`))
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("ETag", `"strong"`)
		w.Header().Set("Content-Length", itoa(len(body)))
		w.Write(body)
	})
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", &ResponseTransform{Func: func(_ *http.Response, b []byte) ([]byte, error) {
		if !json.Valid(b) {
			return b, nil
		}
		return nil, errors.New("unreachable")
	}})
	req, _ := http.NewRequest("GET", ps.URL+"/", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Equal(got, body) {
		t.Errorf("body changed")
	}
	if diff := cmp.Diff([]string{"gzip", `"strong"`, itoa(len(body))},
		[]string{res.Header.Get("Content-Encoding"), res.Header.Get("Etag"), res.Header.Get("Content-Length")}); diff != "" {
		t.Errorf("headers (-want +got)\n%s", diff)
	}
}

func TestResponseTransformLimits(t *testing.T) {
	leaktest.Check(t)
	big := strings.Repeat("a", 5000)
	bomb := compress(t, "gzip", []byte(strings.Repeat("z", 100000)))
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		fn         func(*http.Response, []byte) ([]byte, error)
		wantStatus int
		wantBody   string
		wantLog    string
	}{{
		name: "declared length over limit",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", itoa(len(big)))
			io.WriteString(w, big)
		},
		fn:         upper,
		wantStatus: 502, wantLog: "over the 1000-byte transform limit",
	}, {
		name: "chunked body over limit",
		handler: func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < 5; i++ {
				io.WriteString(w, big[:1000])
				http.NewResponseController(w).Flush()
			}
		},
		fn:         upper,
		wantStatus: 502, wantLog: "over the 1000-byte transform limit",
	}, {
		name: "decoded body over limit",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(bomb)
		},
		fn:         upper,
		wantStatus: 502, wantLog: "over the 1000-byte transform limit",
	}, {
		name: "upstream error relayed as is",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			io.WriteString(w, big)
		},
		fn:         upper,
		wantStatus: 503, wantBody: big,
	}, {
		name:       "func chooses the status",
		handler:    func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x") },
		fn:         func(*http.Response, []byte) ([]byte, error) { return nil, Errorf(422, "bad hits") },
		wantStatus: 422, wantLog: "bad hits",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, tt.handler)
			ps, p, logs := newProxy(t, up.URL)
			p.Handle("/", &ResponseTransform{Func: tt.fn, MaxBody: 1000})
			res, err := client(t).Get(ps.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body = %.40q..., want the upstream's", body)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
		})
	}
}

// TestResponseTransformValidators checks that HEAD and 304 responses on a
// transforming route agree with the transformed GET, and that the
// upstream is asked for a whole representation.
func TestResponseTransformValidators(t *testing.T) {
	leaktest.Check(t)
	seen := make(chan http.Header, 2)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("ETag", `"v"`)
		if r.Header.Get("If-None-Match") != "" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Length", "5")
		if r.Method != "HEAD" {
			io.WriteString(w, "hello")
		}
	})
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", &ResponseTransform{Func: upper})
	c := client(t)

	req, _ := http.NewRequest("HEAD", ps.URL+"/", nil)
	req.Header.Set("Range", "bytes=0-1")
	req.Header.Set("If-Range", `"v"`)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := <-seen
	if h.Get("Range") != "" || h.Get("If-Range") != "" {
		t.Errorf("Range reached the upstream: %q %q", h.Get("Range"), h.Get("If-Range"))
	}
	if diff := cmp.Diff([]string{`W/"v"`, ""}, []string{res.Header.Get("Etag"), res.Header.Get("Content-Length")}); diff != "" {
		t.Errorf("HEAD headers (-want +got)\n%s", diff)
	}

	req, _ = http.NewRequest("GET", ps.URL+"/", nil)
	req.Header.Set("If-None-Match", `W/"v"`)
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	<-seen
	if res.StatusCode != 304 || res.Header.Get("Etag") != `W/"v"` {
		t.Errorf("revalidation: %d %q, want 304 W/\"v\"", res.StatusCode, res.Header.Get("Etag"))
	}
}

func TestLimitAcceptEncoding(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "identity"},
		{"br", "identity"},
		{"gzip, deflate, br, zstd", "gzip, deflate"},
		{"br;q=1.0, gzip;q=0.8, *;q=0.1", "gzip;q=0.8, gzip"},
		{"gzip;q=0, deflate", "deflate"},
		{"identity", "identity"},
		{"GZIP", "GZIP"},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.in != "" {
			h.Set("Accept-Encoding", tt.in)
		}
		limitAcceptEncoding(h)
		if got := h.Get("Accept-Encoding"); got != tt.want {
			t.Errorf("limitAcceptEncoding(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestRewriteJSON covers the request body helpers: the rewrite, and the
// cases where the body is left exactly as the client sent it.
func TestRewriteJSON(t *testing.T) {
	leaktest.Check(t)
	type seenReq struct {
		Body          string
		ContentLength int64
		Chunked       bool
	}
	seen := make(chan seenReq, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- seenReq{string(b), r.ContentLength, len(r.TransferEncoding) > 0}
	})
	ps, p, _ := newProxy(t, up.URL)
	raise := func(doc *map[string]json.RawMessage) error {
		if *doc == nil {
			*doc = map[string]json.RawMessage{}
		}
		(*doc)["size"] = json.RawMessage("50")
		return nil
	}
	// Forward untouched when the body cannot be rewritten ...
	p.HandleFunc("/lenient", func(w http.ResponseWriter, pr *ProxyRequest) error {
		if err := RewriteJSON(pr, 64, raise); err != nil && StatusFor(err) == 500 {
			return err
		}
		return pr.Forward(w)
	})
	// ... or fail with the helper's status.
	p.HandleFunc("/strict", func(w http.ResponseWriter, pr *ProxyRequest) error {
		if err := RewriteJSON(pr, 64, raise); err != nil {
			return err
		}
		return pr.Forward(w)
	})
	long := `{"query":"` + strings.Repeat("q", 100) + `"}`
	tests := []struct {
		name, path, body string
		chunked          bool
		encoding         string
		wantStatus       int
		want             seenReq
	}{
		{"rewritten", "/lenient", `{"size":5,"query":{"match":{"t":"x"}}}`, false, "", 200,
			seenReq{`{"query":{"match":{"t":"x"}},"size":50}`, 39, false}},
		{"rewritten chunked", "/lenient", `{"size":5}`, true, "", 200, seenReq{`{"size":50}`, 11, false}},
		{"empty body", "/lenient", ``, false, "", 200, seenReq{`{"size":50}`, 11, false}},
		{"not json passes", "/lenient", `{"size":`, false, "", 200, seenReq{`{"size":`, 8, false}},
		{"two values pass", "/lenient", `{} {}`, false, "", 200, seenReq{`{} {}`, 5, false}},
		{"too large passes whole", "/lenient", long, true, "", 200, seenReq{long, -1, true}},
		{"too large refused", "/strict", long, false, "", 413, seenReq{}},
		{"not json refused", "/strict", `nope`, false, "", 400, seenReq{}},
		{"encoded refused", "/strict", `{}`, false, "gzip", 415, seenReq{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, _ := http.NewRequest("POST", ps.URL+tt.path, body)
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				select {
				case s := <-seen:
					t.Errorf("request reached the upstream: %+v", s)
				default:
				}
				return
			}
			if diff := cmp.Diff(tt.want, <-seen); diff != "" {
				t.Errorf("upstream saw (-want +got)\n%s", diff)
			}
		})
	}
}

func TestBufferRequestBodyNoBody(t *testing.T) {
	in, _ := http.NewRequest("GET", "http://x/", nil)
	pr := &ProxyRequest{In: in, Out: outboundRequest(in)}
	b, err := pr.BufferBody(10)
	if b != nil || err != nil {
		t.Errorf("BufferBody = %q, %v; want nil, nil", b, err)
	}
}

func FuzzLimitAcceptEncoding(f *testing.F) {
	f.Add("gzip;q=0.5, br, *;q=0.1")
	f.Add("deflate;q=, identity;q=0")
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{"Accept-Encoding": {v}}
		limitAcceptEncoding(h)
		got := h.Values("Accept-Encoding")
		if len(got) != 1 {
			t.Fatalf("%d values", len(got))
		}
		for part := range strings.SplitSeq(got[0], ",") {
			coding, _, _ := strings.Cut(part, ";")
			switch strings.ToLower(strings.TrimSpace(coding)) {
			case "gzip", "x-gzip", "deflate", "identity":
			default:
				t.Fatalf("limitAcceptEncoding(%q) kept %q", v, coding)
			}
		}
	})
}
