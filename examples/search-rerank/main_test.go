package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// recorded is a request as the backend received it.
type recorded struct {
	Method, URI string
	Header      http.Header
	Body        string
}

// recorder wraps the backend to keep the requests it received.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	next http.Handler
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, recorded{r.Method, r.RequestURI, r.Header.Clone(), string(b)})
	rec.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(b))
	rec.next.ServeHTTP(w, r)
}

func (rec *recorder) last(t *testing.T) recorded {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("the backend got no request")
	}
	return rec.reqs[len(rec.reqs)-1]
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// env is a backend and the reranking proxy in front of it.
type env struct {
	backend, proxy *httptest.Server
	rec            *recorder
	client         *http.Client
}

func newEnv(t testing.TB, cfg config) *env {
	rec := &recorder{next: newBackend().handler()}
	be := httptest.NewServer(rec)
	t.Cleanup(be.Close)
	cfg.upstream = be.URL
	if cfg.topN == 0 {
		cfg.topN = 20
	}
	if cfg.maxRequest == 0 {
		cfg.maxRequest = 1024 // small, to test bodies over the limit
	}
	if cfg.fields == nil {
		cfg.fields = []string{"title", "text"}
	}
	if cfg.statusPath == "" {
		cfg.statusPath = "/sluice/status"
	}
	cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := newProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(p)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(func() {
		ps.Close()
		p.CloseIdleConnections()
		tr.CloseIdleConnections()
	})
	return &env{backend: be, proxy: ps, rec: rec, client: &http.Client{Transport: tr}}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (e *env) do(t testing.TB, base, method, uri, body string, header http.Header) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// searchResponse is the shape of a search response the tests read.
type searchResponse struct {
	Hits struct {
		Hits []struct {
			ID     string         `json:"_id"`
			Score  float64        `json:"_score"`
			Rerank *float64       `json:"_rerank_score"`
			Source map[string]any `json:"_source"`
		} `json:"hits"`
	} `json:"hits"`
}

func decodeSearch(t testing.TB, b []byte) searchResponse {
	t.Helper()
	var sr searchResponse
	if err := json.Unmarshal(b, &sr); err != nil {
		t.Fatalf("not a search response: %v\n%s", err, b)
	}
	return sr
}

// referenceBM25 computes Okapi BM25 (k1 1.2, b 0.75, Lucene's IDF) of
// query over docs, written apart from the proxy's implementation.
func referenceBM25(query string, docs []string) []float64 {
	word := regexp.MustCompile(`[\p{L}\p{N}]+`)
	split := func(s string) []string { return word.FindAllString(strings.ToLower(s), -1) }
	const k1, b = 1.2, 0.75
	var total int
	docTerms := make([][]string, len(docs))
	for i, d := range docs {
		docTerms[i] = split(d)
		total += len(docTerms[i])
	}
	avgdl := float64(total) / float64(len(docs))
	scores := make([]float64, len(docs))
	for _, q := range split(query) {
		n := 0
		for _, terms := range docTerms {
			for _, w := range terms {
				if w == q {
					n++
					break
				}
			}
		}
		idf := math.Log(1 + (float64(len(docs))-float64(n)+0.5)/(float64(n)+0.5))
		for i, terms := range docTerms {
			f := 0.0
			for _, w := range terms {
				if w == q {
					f++
				}
			}
			scores[i] += idf * f * (k1 + 1) / (f + k1*(1-b+b*float64(len(terms))/avgdl))
		}
	}
	return scores
}

// TestRerankEndToEnd runs searches through the proxy and checks the hits
// against BM25 computed here over the engine's own top N.
func TestRerankEndToEnd(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, config{topN: 20})
	tests := []struct {
		name, method, uri, body string
		query                   string
		size, from              int
	}{
		{"post match", "POST", "/articles/_search", `{"query":{"match":{"text":"proxy streaming"}},"size":3}`, "proxy streaming", 3, 0},
		{"post page two", "POST", "/articles/_search", `{"query":{"match":{"text":{"query":"proxy streaming"}}},"size":3,"from":3}`, "proxy streaming", 3, 3},
		{"get uri search", "GET", "/articles/_search?q=search+rerank&size=4", "", "search rerank", 4, 0},
		{"get with body", "GET", "/articles/_search", `{"query":{"multi_match":{"query":"streaming proxy","fields":["title","text"]}}}`, "streaming proxy", 10, 0},
		{"all indices", "POST", "/_search", `{"query":{"match":{"text":"proxy"}},"size":5}`, "proxy", 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.do(t, e.proxy.URL, tt.method, tt.uri, tt.body, nil)
			if got.Status != 200 {
				t.Fatalf("status %d: %s", got.Status, got.Body)
			}
			if cl := got.Header.Get("Content-Length"); cl != fmt.Sprint(len(got.Body)) {
				t.Errorf("Content-Length %s for %d bytes", cl, len(got.Body))
			}
			up := e.rec.last(t)
			if !strings.Contains(up.URI+up.Body, "20") {
				t.Errorf("the engine was not asked for the top 20: %s %s", up.URI, up.Body)
			}
			// What the engine answers the client directly, and its top N.
			direct := decodeSearch(t, e.do(t, e.backend.URL, tt.method, tt.uri, tt.body, nil).Body)
			topURI, topBody := tt.uri, tt.body
			if strings.Contains(topURI, "size=") {
				topURI = strings.Replace(topURI, fmt.Sprintf("size=%d", tt.size), "size=20", 1)
			} else {
				var doc map[string]any
				if topBody != "" {
					json.Unmarshal([]byte(topBody), &doc)
				} else {
					doc = map[string]any{}
				}
				doc["size"], doc["from"] = 20, 0
				b, _ := json.Marshal(doc)
				topBody = string(b)
			}
			top := decodeSearch(t, e.do(t, e.backend.URL, tt.method, topURI, topBody, nil).Body)

			texts := make([]string, len(top.Hits.Hits))
			for i, h := range top.Hits.Hits {
				texts[i] = fmt.Sprint(h.Source["title"], " ", h.Source["text"])
			}
			scores := referenceBM25(tt.query, texts)
			idx := make([]int, len(scores))
			for i := range idx {
				idx[i] = i
			}
			sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
			lo, hi := min(tt.from, len(idx)), min(tt.from+tt.size, len(idx))
			var wantIDs, engineIDs, gotIDs []string
			for _, i := range idx[lo:hi] {
				wantIDs = append(wantIDs, top.Hits.Hits[i].ID)
			}
			for _, h := range direct.Hits.Hits {
				engineIDs = append(engineIDs, h.ID)
			}
			proxied := decodeSearch(t, got.Body)
			for i, h := range proxied.Hits.Hits {
				gotIDs = append(gotIDs, h.ID)
				if h.Rerank == nil {
					t.Errorf("hit %s has no _rerank_score", h.ID)
				} else if want := scores[idx[lo+i]]; math.Abs(*h.Rerank-want) > 1e-9 {
					t.Errorf("hit %s: _rerank_score %v, want %v", h.ID, *h.Rerank, want)
				}
				orig := top.Hits.Hits[idx[lo+i]]
				if h.Score != orig.Score || !cmp.Equal(h.Source, orig.Source) {
					t.Errorf("hit %s: _score or _source changed", h.ID)
				}
			}
			if diff := cmp.Diff(wantIDs, gotIDs); diff != "" {
				t.Errorf("reranked ids (-BM25 +proxy)\n%s", diff)
			}
			if cmp.Equal(gotIDs, engineIDs) {
				t.Errorf("reranked order %v is the engine's own: the test shows nothing", gotIDs)
			}
			// Every field but hits.hits is the engine's answer to the top-N query.
			var a, b map[string]any
			json.Unmarshal(got.Body, &a)
			json.Unmarshal(e.do(t, e.backend.URL, tt.method, topURI, topBody, nil).Body, &b)
			a["hits"].(map[string]any)["hits"], b["hits"].(map[string]any)["hits"] = nil, nil
			if diff := cmp.Diff(b, a); diff != "" {
				t.Errorf("other fields changed (-engine +proxy)\n%s", diff)
			}
		})
	}
}

// TestPassThroughByteForByte sends the same requests to two identical
// backends, one directly and one through the proxy, and compares what
// each backend received and what each client got.
func TestPassThroughByteForByte(t *testing.T) {
	leaktest.Check(t)
	direct := newEnv(t, config{})
	proxied := newEnv(t, config{})
	big := `{"query":{"match":{"text":"` + strings.Repeat("proxy ", 300) + `"}}}`
	ndjson := "{\"index\":{\"_index\":\"notes\",\"_id\":\"n1\"}}\n{\"title\":\"hello\"}\n{\"create\":{\"_id\":\"n2\"}}\n{\"title\":\"world\"}\n"
	steps := []struct {
		name, method, uri, body string
		header                  http.Header
	}{
		{"cluster info", "GET", "/", "", nil},
		{"create index", "PUT", "/notes", `{"settings":{"number_of_shards":1}}`, http.Header{"Content-Type": {"application/json"}}},
		{"create index again", "PUT", "/notes", `{}`, nil},
		{"bulk", "POST", "/notes/_bulk", ndjson, http.Header{"Content-Type": {"application/x-ndjson"}}},
		{"index doc", "PUT", "/notes/_doc/n3", `{"title":"third","text":"x"}`, http.Header{"X-Opaque-Id": {"abc"}}},
		{"get doc", "GET", "/notes/_doc/n1", "", http.Header{"Accept-Encoding": {"gzip, br"}}},
		{"search not json compressed client", "POST", "/articles/_search", `{"query":`, http.Header{"Accept-Encoding": {"br"}}},
		{"head index", "HEAD", "/articles", "", nil},
		{"head missing", "HEAD", "/missing", "", nil},
		{"cat", "GET", "/_cat/indices?v", "", nil},
		{"scroll search", "POST", "/articles/_search?scroll=1m", `{"query":{"match":{"text":"proxy"}},"size":2}`, nil},
		{"scroll next", "POST", "/_search/scroll", `SCROLL`, nil},
		{"search not json", "POST", "/articles/_search", `{"query":`, nil},
		{"search too large", "POST", "/articles/_search", big, nil},
		{"search compressed", "POST", "/articles/_search", "\x1f\x8b", http.Header{"Content-Encoding": {"gzip"}}},
		{"search without query", "POST", "/articles/_search", `{"size":2}`, nil},
		{"search deep page", "POST", "/articles/_search", `{"query":{"match":{"text":"proxy"}},"from":30}`, nil},
		{"search head", "HEAD", "/articles/_search", "", nil},
		{"unknown endpoint", "POST", "/articles/_forcemerge", "", nil},
		{"delete index", "DELETE", "/notes", "", nil},
	}
	var scrollID string
	for _, st := range steps {
		body := st.body
		if body == "SCROLL" {
			body = `{"scroll":"1m","scroll_id":"` + scrollID + `"}`
		}
		a := direct.do(t, direct.backend.URL, st.method, st.uri, body, st.header)
		b := proxied.do(t, proxied.proxy.URL, st.method, st.uri, body, st.header)
		if st.name == "scroll search" {
			var sr struct {
				ScrollID string `json:"_scroll_id"`
			}
			json.Unmarshal(a.Body, &sr)
			scrollID = sr.ScrollID
		}
		for _, r := range []*response{&a, &b} {
			r.Header.Del("Date")
		}
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("%s: response differs (-direct +proxied)\n%s", st.name, diff)
		}
		ra, rb := direct.rec.last(t), proxied.rec.last(t)
		for _, h := range []http.Header{ra.Header, rb.Header} {
			// The documented edits of a proxy: forwarding headers.
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
				h.Del(k)
			}
		}
		if diff := cmp.Diff(ra, rb); diff != "" {
			t.Errorf("%s: request differs (-direct +proxied)\n%s", st.name, diff)
		}
	}
	if scrollID == "" {
		t.Error("the scroll search returned no _scroll_id")
	}
}

func TestStatusEndpoint(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, config{statusPath: "/_status/rerank"})
	for i := 0; i < 3; i++ {
		e.do(t, e.proxy.URL, "GET", "/articles/_search?q=proxy", "", nil)
	}
	e.do(t, e.proxy.URL, "POST", "/articles/_search", `not json`, nil)
	e.do(t, e.proxy.URL, "GET", "/_cat/indices", "", nil)
	before := e.rec.count()
	res := e.do(t, e.proxy.URL, "GET", "/_status/rerank", "", nil)
	if e.rec.count() != before {
		t.Error("the status request reached the backend")
	}
	var st struct {
		Captured   int64              `json:"requests_captured"`
		Reranked   int64              `json:"searches_reranked"`
		Unmodified int64              `json:"searches_unmodified"`
		Passed     int64              `json:"requests_passed_through"`
		Latency    map[string]float64 `json:"rerank_latency_ms"`
		TopN       int                `json:"topn"`
	}
	if err := json.Unmarshal(res.Body, &st); err != nil {
		t.Fatalf("%v: %s", err, res.Body)
	}
	latKeys := []string{}
	for k, v := range st.Latency {
		if v < 0 {
			t.Errorf("latency %s = %v", k, v)
		}
		latKeys = append(latKeys, k)
	}
	sort.Strings(latKeys)
	got := []any{res.Status, st.Captured, st.Reranked, st.Unmodified, st.Passed, st.TopN, latKeys}
	want := []any{200, int64(4), int64(3), int64(1), int64(1), 20, []string{"p50", "p90", "p99"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got)\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []config{
		{upstream: "127.0.0.1:9200", topN: 5, statusPath: "/s"},
		{upstream: "http://127.0.0.1:9200", topN: 0, statusPath: "/s"},
		{upstream: "http://127.0.0.1:9200", topN: 5, statusPath: "s"},
	} {
		if _, err := newProxy(cfg); err == nil {
			t.Errorf("newProxy(%+v) accepted a bad configuration", cfg)
		}
	}
}

// BenchmarkSearch measures the capture path (rewrite, buffer, rerank,
// re-encode) against plain pass-through of the same search.
func BenchmarkSearch(b *testing.B) {
	const body = `{"query":{"match":{"text":"proxy streaming"}},"size":5}`
	e := newEnv(b, config{topN: 20})
	plain := httptest.NewServer(&sluice.Proxy{Director: &sluice.SingleHost{Target: mustURL(e.backend.URL)}})
	b.Cleanup(plain.Close)
	for _, bc := range []struct{ name, base string }{
		{"passthrough", plain.URL},
		{"capture", e.proxy.URL},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := e.do(b, bc.base, "POST", "/articles/_search", body, nil)
				if r.Status != 200 {
					b.Fatal(r.Status)
				}
			}
		})
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// FuzzRerank feeds arbitrary request and response bodies to the search
// handler's planning and reranking: no panic, and the output is either
// the engine's body untouched or valid JSON.
func FuzzRerank(f *testing.F) {
	f.Add(`{"query":{"bool":{"must":[{"match":{"t":{"query":"a b"}}}]}},"size":2,"from":1}`,
		`{"hits":{"hits":[{"_id":"1","_source":{"title":"a","text":["b"]}},{"_id":"2","_source":{"title":"b b"}},{"_id":"3"}]}}`)
	f.Add(`{"size":"x"}`, `{"hits":{"hits":[1,2]}}`)
	f.Add(`{"size":9223372036854775807,"from":1}`, `{"hits":{"hits":[{"_id":"1"},{"_id":"2"}]}}`)
	f.Add(`{"size":1,"from":9223372036854775807}`, `{"hits":{"hits":[{"_id":"1"}]}}`)
	f.Add(`[]`, `not json`)
	h := &searchHandler{topN: 5, fields: []string{"title", "text", "a.b"}, reranker: DefaultBM25,
		stats: &stats{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, req, res string) {
		var doc map[string]json.RawMessage
		if json.Unmarshal([]byte(req), &doc) != nil {
			return
		}
		p, err := h.plan(url.Values{"q": {"a"}}, doc)
		if err != nil {
			return
		}
		out, err := h.rerank(t.Context(), p, []byte(res))
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != res && !json.Valid(out) {
			t.Fatalf("invalid JSON out: %q", out)
		}
	})
}

// TestWindowBounds: size and from are bounded, in the URL and in the
// body, with a 400 that says which; no sum of them overflows (size
// 9223372036854775807 with from 1 once panicked the handler on every
// request). Every combination of edge values gets 200 or the 400, and
// the backend never sees a refused one.
func TestWindowBounds(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, config{topN: 20})
	values := []string{"0", "1", "3", "20", "21", "9999", "10000", "10001", "2147483647", "2147483648",
		"9223372036854775807", "9223372036854775808", "-1", "-9223372036854775808", "1.5", "1e3", "x", ""}
	num := func(s string) (int64, bool) {
		if s == "" {
			return 0, true
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	for _, size := range values {
		for _, from := range values {
			sz, okSize := num(size)
			fr, okFrom := num(from)
			if size == "" {
				sz = 10
			}
			want := 200
			if !okSize || !okFrom || sz < 0 || fr < 0 || sz > 10000 || fr > 10000 || sz+fr > 10000 {
				want = 400
			}
			q := url.Values{"q": {"proxy"}}
			var body strings.Builder
			body.WriteString(`{"query":{"match":{"text":"proxy"}}`)
			for _, p := range [][2]string{{"size", size}, {"from", from}} {
				if v := p[1]; v != "" {
					q.Set(p[0], v)
					if v == "x" {
						v = `"x"`
					}
					fmt.Fprintf(&body, ",%q:%s", p[0], v)
				}
			}
			body.WriteString("}")
			for _, r := range []struct{ method, uri, body string }{
				{"GET", "/articles/_search?" + q.Encode(), ""},
				{"POST", "/articles/_search", body.String()},
			} {
				before := e.rec.count()
				res := e.do(t, e.proxy.URL, r.method, r.uri, r.body, nil)
				if res.Status != want {
					t.Errorf("%s %s %s: %d %s, want %d", r.method, r.uri, r.body, res.Status, res.Body, want)
					continue
				}
				if want == 400 {
					var es struct {
						Error struct {
							Type, Reason string
						}
						Status int
					}
					if err := json.Unmarshal(res.Body, &es); err != nil || es.Status != 400 || es.Error.Type != "illegal_argument_exception" ||
						!strings.Contains(es.Error.Reason, "size") && !strings.Contains(es.Error.Reason, "from") {
						t.Errorf("%s %s %s: 400 body %s", r.method, r.uri, r.body, res.Body)
					}
					if e.rec.count() != before {
						t.Errorf("%s %s %s: a refused search reached the backend", r.method, r.uri, r.body)
					}
				}
			}
		}
	}
}

// FuzzPlanWindow: whatever size and from the URL carries, plan refuses
// them or yields a window within the bounds, and rerank serves it
// without panicking.
func FuzzPlanWindow(f *testing.F) {
	for _, v := range [][2]string{{"9223372036854775807", "1"}, {"1", "9223372036854775807"}, {"-1", "0"}, {"5", "3"}, {"10000", "0"}} {
		f.Add(v[0], v[1])
	}
	h := &searchHandler{topN: 5, fields: []string{"title"}, reranker: DefaultBM25,
		stats: &stats{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res := []byte(`{"hits":{"hits":[{"_id":"1","_source":{"title":"a"}},{"_id":"2","_source":{"title":"b"}},{"_id":"3"}]}}`)
	f.Fuzz(func(t *testing.T, size, from string) {
		p, err := h.plan(url.Values{"q": {"a"}, "size": {size}, "from": {from}}, nil)
		if err != nil {
			return
		}
		if p.size < 0 || p.from < 0 || p.from+p.size > h.topN {
			t.Fatalf("plan accepted size %d from %d", p.size, p.from)
		}
		if _, err := h.rerank(t.Context(), p, res); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFlags: settings that cannot work are refused at start, naming the
// flag; -h says what the program is before the flags.
func TestFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"-upstream", "https://search.internal:9200", "-topn", "100", "-field", "title, author.name", "-max-window", "500"}, ""},
		{[]string{"-upstream", "127.0.0.1:9200"}, "-upstream"},
		{[]string{"-topn", "0"}, "-topn 0"},
		{[]string{"-topn", "20000"}, "-topn 20000"},
		{[]string{"-topn", "600", "-max-window", "500"}, "-topn 600"},
		{[]string{"-max-window", "0"}, "-max-window 0"},
		{[]string{"-max-window", "-1"}, "-max-window -1"},
		{[]string{"-field", "title,,text"}, "-field"},
		{[]string{"-field", ""}, "-field"},
		{[]string{"-status", "status"}, "-status"},
		{[]string{"-max-request", "0"}, "-max-request"},
		{[]string{"-max-response", "-1"}, "-max-response"},
		{[]string{"-listen", "8080"}, "-listen"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		var out strings.Builder
		cfg, err := parseFlags(tt.args, &out)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%q: %v, want an error with %q", tt.args, err, tt.want)
		}
		if tt.args == nil && cfg.upstream != "" {
			t.Errorf("no -upstream: upstream %q, want empty (the demo backend)", cfg.upstream)
		}
	}
	var out strings.Builder
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.HasPrefix(out.String(), "search-rerank: a reranking proxy") || !strings.Contains(out.String(), "-max-window") {
		t.Errorf("-h prints:\n%s", out.String())
	}
}
