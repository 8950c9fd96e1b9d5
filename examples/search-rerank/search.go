package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// searchHandler is the Interceptor of the captured _search routes: it
// raises the request's size to the top N, forwards it, reranks the N hits
// and cuts them back to the window the client asked for.
type searchHandler struct {
	topN        int
	fields      []string
	reranker    Reranker
	maxRequest  int64
	maxResponse int64
	maxWindow   int // largest from + size; 0: DefaultMaxWindow
	stats       *stats
	log         *slog.Logger
}

// DefaultMaxWindow is the largest from + size a search may ask for,
// Elasticsearch's default index.max_result_window.
const DefaultMaxWindow = 10000

// errBadWindow is a size or from the proxy refuses with 400, as the
// engine would: not an integer, negative, or past the result window.
type errBadWindow string

func (e errBadWindow) Error() string { return string(e) }

// plan is what the handler learned from one search request.
type plan struct {
	query      string
	size, from int
}

// errNotReranked says why a search is forwarded as the client sent it.
type errNotReranked string

func (e errNotReranked) Error() string { return string(e) }

// errKeepBody tells RewriteJSON to leave the body alone (the rewrite is in
// the URL).
var errKeepBody = errors.New("size and from are in the URL")

func (h *searchHandler) Intercept(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
	h.stats.captured.Add(1)
	if pr.In.Method == http.MethodHead {
		return h.passUnmodified(w, pr, "HEAD")
	}
	q := pr.Out.URL.Query()
	if q.Has("scroll") {
		return h.passUnmodified(w, pr, "scroll search")
	}
	var p plan
	var why error
	err := sluice.RewriteJSON(pr, h.maxRequest, func(doc *map[string]json.RawMessage) error {
		p, why = h.plan(q, *doc)
		if why != nil {
			return why
		}
		if q.Has("size") || q.Has("from") {
			q.Set("size", strconv.Itoa(h.topN))
			q.Set("from", "0")
			if *doc != nil {
				delete(*doc, "size")
				delete(*doc, "from")
			}
			pr.Out.URL.RawQuery = q.Encode()
			if *doc == nil {
				return errKeepBody
			}
			return nil
		}
		if *doc == nil {
			*doc = map[string]json.RawMessage{}
		}
		(*doc)["size"] = json.RawMessage(strconv.Itoa(h.topN))
		(*doc)["from"] = json.RawMessage("0")
		return nil
	})
	var bad errBadWindow
	switch {
	case errors.Is(err, errKeepBody):
	case errors.As(err, &bad):
		h.stats.refused.Add(1)
		writeSearchError(w, string(bad))
		return nil
	case err != nil:
		// Not JSON, too large, compressed, no query text, deep paging:
		// the engine gets the request as sent and decides.
		return h.passUnmodified(w, pr, err.Error())
	}
	t := &sluice.ResponseTransform{
		MaxBody: h.maxResponse,
		Func: func(res *http.Response, body []byte) ([]byte, error) {
			return h.rerank(pr.Context(), p, body)
		},
	}
	return t.Intercept(w, pr)
}

// writeSearchError answers 400 with an Elasticsearch-shaped error.
func writeSearchError(w http.ResponseWriter, reason string) {
	cause := map[string]string{"type": "illegal_argument_exception", "reason": reason}
	b, _ := json.Marshal(map[string]any{
		"error":  map[string]any{"root_cause": []any{cause}, "type": cause["type"], "reason": reason},
		"status": http.StatusBadRequest,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(append(b, '\n'))
}

func (h *searchHandler) passUnmodified(w http.ResponseWriter, pr *sluice.ProxyRequest, why string) error {
	h.stats.unmodified.Add(1)
	h.log.Debug("search-rerank: search forwarded unmodified", "uri", pr.In.RequestURI, "reason", why)
	return pr.Forward(w)
}

// plan reads the client's window and query text from the URL and body.
// Elasticsearch takes size and from from the URL when they are there.
func (h *searchHandler) plan(q url.Values, doc map[string]json.RawMessage) (plan, error) {
	p := plan{size: 10}
	var err error
	if p.size, err = intParam(q, doc, "size", 10); err != nil {
		return p, err
	}
	if p.from, err = intParam(q, doc, "from", 0); err != nil {
		return p, err
	}
	// Each is bounded before they are added: no overflow.
	limit := h.maxWindow
	if limit <= 0 {
		limit = DefaultMaxWindow
	}
	if p.size < 0 || p.from < 0 {
		return p, errBadWindow(fmt.Sprintf("[size] and [from] must not be negative, got size %d and from %d", p.size, p.from))
	}
	if p.size > limit || p.from > limit || p.from+p.size > limit {
		return p, errBadWindow(fmt.Sprintf("result window too large: [from] + [size] must be at most %d, got from %d and size %d", limit, p.from, p.size))
	}
	if p.from+p.size > h.topN {
		return p, errNotReranked("window beyond the top N")
	}
	texts := []string{q.Get("q")}
	if raw, ok := doc["query"]; ok {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return p, errNotReranked("bad query")
		}
		texts = append(texts, queryText(v)...)
	}
	p.query = strings.TrimSpace(strings.Join(texts, " "))
	if p.query == "" {
		return p, errNotReranked("no query text")
	}
	return p, nil
}

func intParam(q url.Values, doc map[string]json.RawMessage, name string, def int) (int, error) {
	if q.Has(name) {
		n, err := strconv.Atoi(q.Get(name))
		if err != nil {
			return 0, errBadWindow(fmt.Sprintf("[%s] must be an integer, got %q", name, q.Get(name)))
		}
		return n, nil
	}
	raw, ok := doc[name]
	if !ok {
		return def, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, errBadWindow(fmt.Sprintf("[%s] must be an integer, got %.32s", name, raw))
	}
	return n, nil
}

// queryText collects the free text of a query DSL tree: match,
// match_phrase, multi_match, query_string and simple_query_string, inside
// bool clauses too.
func queryText(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			switch k {
			case "match", "match_phrase", "match_bool_prefix":
				if fields, ok := sub.(map[string]any); ok {
					for _, f := range fields {
						switch f := f.(type) {
						case string:
							out = append(out, f)
						case map[string]any:
							if s, ok := f["query"].(string); ok {
								out = append(out, s)
							}
						}
					}
				}
			case "multi_match", "query_string", "simple_query_string":
				if m, ok := sub.(map[string]any); ok {
					if s, ok := m["query"].(string); ok {
						out = append(out, s)
					}
				}
			default:
				out = append(out, queryText(sub)...)
			}
		}
	case []any:
		for _, sub := range v {
			out = append(out, queryText(sub)...)
		}
	}
	slices.Sort(out) // map order is random: keep the query text stable
	return out
}

// rerank reorders the hits of a search response. A body that is not a
// search response is returned unchanged, so the client gets it as is.
func (h *searchHandler) rerank(ctx context.Context, p plan, body []byte) ([]byte, error) {
	start := time.Now()
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return body, nil
	}
	var hitsObj map[string]json.RawMessage
	if json.Unmarshal(doc["hits"], &hitsObj) != nil {
		return body, nil
	}
	var hits []json.RawMessage
	if json.Unmarshal(hitsObj["hits"], &hits) != nil {
		return body, nil
	}
	texts := make([]string, len(hits))
	for i, hit := range hits {
		var src struct {
			Source map[string]any `json:"_source"`
		}
		_ = json.Unmarshal(hit, &src)
		texts[i] = fieldText(src.Source, h.fields)
	}
	scores, err := h.reranker.Rerank(ctx, p.query, texts)
	if err != nil || len(scores) != len(hits) {
		// The engine's order is still a good answer.
		h.log.Warn("search-rerank: reranker failed, keeping the engine's order", "err", err)
		scores = make([]float64, len(hits))
	}
	idx := order(scores)
	// plan bounds from and size; clamp anyway without adding them.
	lo := min(max(p.from, 0), len(idx))
	hi := lo + min(max(p.size, 0), len(idx)-lo)
	out := make([]json.RawMessage, 0, hi-lo)
	for _, i := range idx[lo:hi] {
		var m map[string]json.RawMessage
		if json.Unmarshal(hits[i], &m) != nil {
			return body, nil
		}
		m["_rerank_score"] = json.RawMessage(formatScore(scores[i]))
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if hitsObj["hits"], err = json.Marshal(out); err != nil {
		return nil, err
	}
	if doc["hits"], err = json.Marshal(hitsObj); err != nil {
		return nil, err
	}
	nb, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	h.stats.reranked.Add(1)
	h.stats.observe(time.Since(start))
	return nb, nil
}

func formatScore(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "0"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// fieldText joins the string values of the named fields of a source
// document (arrays of strings too; "a.b" reaches into objects).
func fieldText(src map[string]any, fields []string) string {
	var b strings.Builder
	for _, f := range fields {
		var v any = src
		for part := range strings.SplitSeq(f, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		appendText(&b, v)
	}
	return b.String()
}

func appendText(b *strings.Builder, v any) {
	switch v := v.(type) {
	case string:
		b.WriteString(v)
		b.WriteByte(' ')
	case []any:
		for _, e := range v {
			appendText(b, e)
		}
	}
}

// stats are the counters the status endpoint reports.
type stats struct {
	captured, reranked, unmodified, refused, passed atomic.Int64

	mu      sync.Mutex
	lat     [1024]time.Duration // the latest rerank latencies, a ring
	n       int
	started time.Time
}

func (s *stats) observe(d time.Duration) {
	s.mu.Lock()
	s.lat[s.n%len(s.lat)] = d
	s.n++
	s.mu.Unlock()
}

// percentiles returns the p50, p90 and p99 rerank latencies in
// milliseconds over the latest 1024 reranks (nearest-rank method).
func (s *stats) percentiles() map[string]float64 {
	s.mu.Lock()
	lat := slices.Clone(s.lat[:min(s.n, len(s.lat))])
	s.mu.Unlock()
	out := map[string]float64{}
	if len(lat) == 0 {
		return out
	}
	slices.Sort(lat)
	for _, p := range []int{50, 90, 99} {
		i := (p*len(lat)+99)/100 - 1
		out["p"+strconv.Itoa(p)] = float64(lat[max(i, 0)].Microseconds()) / 1000
	}
	return out
}

// statusHandler answers the status endpoint locally.
func statusHandler(s *stats, cfg config) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := map[string]any{
			"requests_captured":       s.captured.Load(),
			"searches_reranked":       s.reranked.Load(),
			"searches_unmodified":     s.unmodified.Load(),
			"searches_refused":        s.refused.Load(),
			"requests_passed_through": s.passed.Load(),
			"rerank_latency_ms":       s.percentiles(),
			"uptime_seconds":          int64(time.Since(s.started).Seconds()),
			"topn":                    cfg.topN,
			"fields":                  cfg.fields,
			"upstream":                cfg.upstream,
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(body); err != nil {
			http.Error(w, fmt.Sprint(err), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})
}
