package sluice

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

const testPage = `<!doctype html><html><head><link href="/style.css" rel=stylesheet></head>` +
	`<body><a href="/docs/">docs</a><a href="https://example.org/">out</a></body></html>`

// compress encodes b with enc ("gzip" or "deflate").
func compress(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser = gzip.NewWriter(&buf)
	if enc == "deflate" {
		w = zlib.NewWriter(&buf)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHTMLRewriterThroughProxy(t *testing.T) {
	leaktest.Check(t)
	rewriter := &HTMLRewriter{
		Attr: func(tag, key, val string) string {
			if key == "href" && strings.HasPrefix(val, "/") {
				return "/app" + val
			}
			return val
		},
		Inject: `<script src="/app/banner.js"></script>`,
	}
	want := `<!doctype html><html><head><link href="/app/style.css" rel="stylesheet"></head>` +
		`<body><a href="/app/docs/">docs</a><a href="https://example.org/">out</a>` +
		`<script src="/app/banner.js"></script></body></html>`

	tests := []struct {
		name, method, coding, acceptEncoding, wantUpstreamAE, wantBody string
	}{
		{"identity", "GET", "", "", "identity", want},
		{"gzip decoded", "GET", "gzip", "gzip, br;q=1.0, zstd", "gzip", want},
		{"deflate decoded", "GET", "deflate", "deflate;q=0.5, br", "deflate;q=0.5", want},
		{"head", "HEAD", "", "br", "identity", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstreamAE := make(chan string, 1)
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				upstreamAE <- r.Header.Get("Accept-Encoding")
				body := []byte(testPage)
				if tt.coding != "" {
					body = compress(t, tt.coding, body)
					w.Header().Set("Content-Encoding", tt.coding)
				}
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.Header().Set("Content-Length", itoa(len(body)))
				w.Header().Set("ETag", `"v1"`)
				w.Header().Set("Content-Md5", "bogus")
				w.Write(body)
			})
			ps, p, _ := newProxy(t, up.URL)
			p.Handle("/", Filter(rewriter.Filter))

			req, _ := http.NewRequest(tt.method, ps.URL+"/page", nil)
			if tt.acceptEncoding != "" {
				req.Header.Set("Accept-Encoding", tt.acceptEncoding)
			}
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got := <-upstreamAE; got != tt.wantUpstreamAE {
				t.Errorf("upstream Accept-Encoding = %q, want %q", got, tt.wantUpstreamAE)
			}
			if diff := cmp.Diff(tt.wantBody, string(body)); diff != "" {
				t.Errorf("body (-want +got)\n%s", diff)
			}
			got := map[string]string{
				"Content-Length":   res.Header.Get("Content-Length"),
				"Content-Encoding": res.Header.Get("Content-Encoding"),
				"Etag":             res.Header.Get("Etag"),
				"Content-Md5":      res.Header.Get("Content-Md5"),
			}
			wantHdr := map[string]string{"Content-Length": "", "Content-Encoding": "", "Etag": `W/"v1"`, "Content-Md5": ""}
			if tt.method == "HEAD" {
				wantHdr["Content-Md5"] = "bogus" // no body sent: only length and validator matter
			}
			if diff := cmp.Diff(wantHdr, got); diff != "" {
				t.Errorf("headers (-want +got)\n%s", diff)
			}
			if tt.method == "GET" && res.ContentLength != -1 {
				t.Errorf("ContentLength = %d, want -1 (chunked)", res.ContentLength)
			}
		})
	}
}

// TestFilterDeclined checks that a response the filter does not take
// keeps its framing, coding and validator.
func TestFilterDeclined(t *testing.T) {
	leaktest.Check(t)
	body := compress(t, "gzip", []byte(`{"a":1}`))
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("ETag", `"j"`)
		w.Header().Set("Content-Length", itoa(len(body)))
		w.Write(body)
	})
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", Filter((&HTMLRewriter{Inject: "x"}).Filter))
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
	if diff := cmp.Diff([]string{itoa(len(body)), "gzip", `"j"`},
		[]string{res.Header.Get("Content-Length"), res.Header.Get("Content-Encoding"), res.Header.Get("Etag")}); diff != "" {
		t.Errorf("headers (-want +got)\n%s", diff)
	}
}

func TestFilterUndecodableCoding(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "br") // though not asked for
		w.Write([]byte("\x0b\x02\x80<p>x</p>\x03"))
	})
	ps, p, logs := newProxy(t, up.URL)
	p.Handle("/", Filter((&HTMLRewriter{Inject: "x"}).Filter))
	res, err := client(t).Get(ps.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("status = %d, want 502", res.StatusCode)
	}
	if !strings.Contains(logs.String(), "cannot decode content coding") {
		t.Errorf("log does not say why:\n%s", logs)
	}
}

// TestFilterErrorAborts checks that a filter failing mid-body aborts the
// response instead of ending it cleanly.
func TestFilterErrorAborts(t *testing.T) {
	leaktest.Check(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, "{\"ok\":1}\n")
		io.WriteString(w, strings.Repeat("x", 1000)+"\n")
	})
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", Filter((&LineFilter{Func: func(l []byte) []byte { return l }, MaxLineSize: 100}).Filter))
	res, err := client(t).Get(ps.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	if err == nil {
		t.Fatal("body ended cleanly, want an aborted response")
	}
}

// TestLineFilterStreams checks that a line filter redacts server-sent
// events one by one as they arrive: the upstream sends the next event only
// after the client received the previous one, redacted.
func TestLineFilterStreams(t *testing.T) {
	leaktest.Check(t)
	next := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i, card := range []string{"4111111111111111", "5500005555555559"} {
			io.WriteString(w, "id: "+itoa(i)+"\ndata: {\"card\":\""+card+"\"}\n\n")
			rc.Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	cards := regexp.MustCompile(`[0-9]{12,19}`)
	lf := &LineFilter{
		Func:  func(line []byte) []byte { return cards.ReplaceAll(line, []byte("[redacted]")) },
		Match: func(res *http.Response) bool { return res.Header.Get("Content-Type") == "text/event-stream" },
	}
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", Filter(lf.Filter))
	res, err := client(t).Get(ps.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	var got []string
	for i := 0; i < 2; i++ {
		for j := 0; j < 3; j++ {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, line)
		}
		next <- struct{}{}
	}
	want := []string{"id: 0\n", "data: {\"card\":\"[redacted]\"}\n", "\n", "id: 1\n", "data: {\"card\":\"[redacted]\"}\n", "\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got)\n%s", diff)
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("trailing bytes %q", rest)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
