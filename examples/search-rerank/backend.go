package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sluiceproxy/sluice/examples/internal/demo"
)

// backend is the embedded search engine: the subset of the Elasticsearch
// REST API the demo needs, in memory. Search scores with a classic TF-IDF
// sum (raw term frequency, no length normalization), so the reranker's
// BM25 order visibly differs from the engine's.
//
// Endpoints: GET / (cluster info), PUT/HEAD/DELETE /{index},
// PUT|POST /{index}/_doc/{id}, GET /{index}/_doc/{id},
// POST /_bulk and /{index}/_bulk (index and create actions),
// GET /_cat/indices, GET|POST /{index}/_search and /_search (match,
// multi_match, query_string (as plain terms), match_all; size, from, q,
// scroll), POST /_search/scroll.
type backend struct {
	*demo.Server

	mu      sync.RWMutex
	indices map[string]*index
}

type index struct {
	ids  []string // insertion order
	docs map[string]json.RawMessage
}

// startBackend starts the embedded engine on a loopback port with the
// demo corpus in the index "articles".
func startBackend() (*backend, error) {
	b := newBackend()
	srv, err := demo.Start(b.handler())
	if err != nil {
		return nil, err
	}
	b.Server = srv
	return b, nil
}

func newBackend() *backend {
	b := &backend{indices: map[string]*index{}}
	ix := &index{docs: map[string]json.RawMessage{}}
	for i, a := range corpus {
		id := strconv.Itoa(i + 1)
		src, _ := json.Marshal(a)
		ix.ids = append(ix.ids, id)
		ix.docs[id] = src
	}
	b.indices["articles"] = ix
	return b
}

func (b *backend) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{
			"name": "sluice-demo", "cluster_name": "sluice-demo",
			"version": map[string]any{"number": "8.0.0-sluice-demo"}, "tagline": "You Know, for Search",
		})
	})
	mux.HandleFunc("/{index}", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut:
			b.createIndex(w, r)
		case http.MethodHead, http.MethodGet:
			if b.get(r.PathValue("index")) == nil {
				w.WriteHeader(404)
				return
			}
			if r.Method == http.MethodGet {
				writeJSON(w, 200, map[string]any{r.PathValue("index"): map[string]any{"settings": map[string]any{}}})
			}
		case http.MethodDelete:
			b.deleteIndex(w, r)
		default:
			esError(w, 405, "method_not_allowed", "Incorrect HTTP method ["+r.Method+"]")
		}
	})
	mux.HandleFunc("PUT /{index}/_doc/{id}", b.putDoc)
	mux.HandleFunc("POST /{index}/_doc/{id}", b.putDoc)
	mux.HandleFunc("GET /{index}/_doc/{id}", b.getDoc)
	mux.HandleFunc("POST /_bulk", b.bulk)
	mux.HandleFunc("POST /{index}/_bulk", b.bulk)
	mux.HandleFunc("GET /_cat/indices", b.catIndices)
	mux.HandleFunc("GET /{index}/_search", b.search)
	mux.HandleFunc("POST /{index}/_search", b.search)
	mux.HandleFunc("GET /_search", b.search)
	mux.HandleFunc("POST /_search", b.search)
	mux.HandleFunc("POST /_search/scroll", b.scroll)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		esError(w, 400, "illegal_argument_exception", "unsupported request ["+r.Method+" "+r.URL.Path+"]")
	})
	return mux
}

func (b *backend) get(name string) *index {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.indices[name]
}

func (b *backend) deleteIndex(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	_, ok := b.indices[r.PathValue("index")]
	delete(b.indices, r.PathValue("index"))
	b.mu.Unlock()
	if !ok {
		esError(w, 404, "index_not_found_exception", "no such index ["+r.PathValue("index")+"]")
		return
	}
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (b *backend) createIndex(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("index")
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20)) // settings and mappings are accepted and ignored
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.indices[name]; ok {
		esError(w, 400, "resource_already_exists_exception", "index ["+name+"] already exists")
		return
	}
	b.indices[name] = &index{docs: map[string]json.RawMessage{}}
	writeJSON(w, 200, map[string]any{"acknowledged": true, "shards_acknowledged": true, "index": name})
}

func (b *backend) putDoc(w http.ResponseWriter, r *http.Request) {
	src, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || !json.Valid(src) {
		esError(w, 400, "mapper_parsing_exception", "failed to parse document")
		return
	}
	result := b.index(r.PathValue("index"), r.PathValue("id"), src)
	writeJSON(w, map[string]int{"created": 201, "updated": 200}[result], map[string]any{
		"_index": r.PathValue("index"), "_id": r.PathValue("id"), "result": result,
	})
}

// index stores a document, creating the index if needed, and returns
// "created" or "updated".
func (b *backend) index(name, id string, src []byte) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ix := b.indices[name]
	if ix == nil {
		ix = &index{docs: map[string]json.RawMessage{}}
		b.indices[name] = ix
	}
	if _, ok := ix.docs[id]; ok {
		ix.docs[id] = bytes.Clone(src)
		return "updated"
	}
	ix.ids = append(ix.ids, id)
	ix.docs[id] = bytes.Clone(src)
	return "created"
}

func (b *backend) getDoc(w http.ResponseWriter, r *http.Request) {
	name, id := r.PathValue("index"), r.PathValue("id")
	b.mu.RLock()
	var src json.RawMessage
	if ix := b.indices[name]; ix != nil {
		src = ix.docs[id]
	}
	b.mu.RUnlock()
	if src == nil {
		writeJSON(w, 404, map[string]any{"_index": name, "_id": id, "found": false})
		return
	}
	writeJSON(w, 200, map[string]any{"_index": name, "_id": id, "found": true, "_source": src})
}

func (b *backend) bulk(w http.ResponseWriter, r *http.Request) {
	sc := bufio.NewScanner(io.LimitReader(r.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var items []any
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if json.Unmarshal(line, &action) != nil || len(action) != 1 {
			esError(w, 400, "illegal_argument_exception", "malformed action/metadata line")
			return
		}
		for op, meta := range action {
			if op != "index" && op != "create" {
				esError(w, 400, "illegal_argument_exception", "unsupported bulk action ["+op+"]")
				return
			}
			if !sc.Scan() || !json.Valid(sc.Bytes()) {
				esError(w, 400, "illegal_argument_exception", "missing or malformed source line")
				return
			}
			name := meta.Index
			if name == "" {
				name = r.PathValue("index")
			}
			result := b.index(name, meta.ID, sc.Bytes())
			items = append(items, map[string]any{op: map[string]any{
				"_index": name, "_id": meta.ID, "result": result,
				"status": map[string]int{"created": 201, "updated": 200}[result],
			}})
		}
	}
	writeJSON(w, 200, map[string]any{"took": 1, "errors": false, "items": items})
}

func (b *backend) catIndices(w http.ResponseWriter, r *http.Request) {
	b.mu.RLock()
	var names []string
	for n := range b.indices {
		names = append(names, n)
	}
	sort.Strings(names)
	var out strings.Builder
	for _, n := range names {
		fmt.Fprintf(&out, "green open %s 1 0 %d 0\n", n, len(b.indices[n].ids))
	}
	b.mu.RUnlock()
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	io.WriteString(w, out.String())
}

// searchRequest is the part of the search DSL the backend understands.
type searchRequest struct {
	Size  *int            `json:"size"`
	From  *int            `json:"from"`
	Query json.RawMessage `json:"query"`
}

// cursor is the state of a scroll, carried in its id.
type cursor struct {
	Index string   `json:"i"`
	Terms []string `json:"t"`
	From  int      `json:"f"`
	Size  int      `json:"s"`
}

func (b *backend) search(w http.ResponseWriter, r *http.Request) {
	var req searchRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil && len(bytes.TrimSpace(body)) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		esError(w, 400, "parsing_exception", "request body is not valid JSON")
		return
	}
	q := r.URL.Query()
	c := cursor{Index: r.PathValue("index"), Size: 10}
	if req.Size != nil {
		c.Size = *req.Size
	}
	if req.From != nil {
		c.From = *req.From
	}
	for name, dst := range map[string]*int{"size": &c.Size, "from": &c.From} {
		if q.Has(name) {
			n, err := strconv.Atoi(q.Get(name))
			if err != nil {
				esError(w, 400, "illegal_argument_exception", "bad ["+name+"]")
				return
			}
			*dst = n
		}
	}
	if c.Size < 0 || c.From < 0 || c.From+c.Size > 10000 {
		esError(w, 400, "illegal_argument_exception", "Result window is too large or negative")
		return
	}
	terms, ok := queryTerms(req.Query)
	if !ok {
		esError(w, 400, "parsing_exception", "unknown query")
		return
	}
	c.Terms = append(tokenize(q.Get("q")), terms...)
	if c.Index != "" && b.get(c.Index) == nil {
		esError(w, 404, "index_not_found_exception", "no such index ["+c.Index+"]")
		return
	}
	b.writeHits(w, c, q.Has("scroll"))
}

func (b *backend) scroll(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ScrollID string `json:"scroll_id"`
	}
	var c cursor
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(raw, &req)
	}
	if err == nil {
		var id []byte
		if id, err = base64.RawURLEncoding.DecodeString(req.ScrollID); err == nil {
			err = json.Unmarshal(id, &c)
		}
	}
	if err != nil {
		esError(w, 404, "search_context_missing_exception", "No search context found for id ["+req.ScrollID+"]")
		return
	}
	b.writeHits(w, c, true)
}

// queryTerms returns the terms of a match, multi_match, query_string or
// match_all query (nil terms: every document matches with score 1).
func queryTerms(raw json.RawMessage) ([]string, bool) {
	if len(raw) == 0 {
		return nil, true
	}
	var q map[string]json.RawMessage
	if json.Unmarshal(raw, &q) != nil || len(q) != 1 {
		return nil, false
	}
	for kind, body := range q {
		switch kind {
		case "match_all":
			return nil, true
		case "match":
			var fields map[string]json.RawMessage
			if json.Unmarshal(body, &fields) != nil || len(fields) != 1 {
				return nil, false
			}
			for _, v := range fields {
				var s string
				if json.Unmarshal(v, &s) != nil {
					var o struct{ Query string }
					if json.Unmarshal(v, &o) != nil {
						return nil, false
					}
					s = o.Query
				}
				return tokenize(s), true
			}
		case "multi_match", "query_string", "simple_query_string":
			var o struct{ Query string }
			if json.Unmarshal(body, &o) != nil {
				return nil, false
			}
			return tokenize(o.Query), true
		}
	}
	return nil, false
}

type hit struct {
	id    string
	index string
	score float64
	src   json.RawMessage
}

// writeHits runs the query c against the index (all indices if none) and
// writes the page [From, From+Size) of the results.
func (b *backend) writeHits(w http.ResponseWriter, c cursor, scroll bool) {
	b.mu.RLock()
	var hits []hit
	var names []string
	if c.Index != "" {
		names = []string{c.Index}
	} else {
		for n := range b.indices {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	for _, n := range names {
		ix := b.indices[n]
		if ix == nil {
			continue
		}
		df := map[string]int{}
		toks := make([][]string, len(ix.ids))
		for i, id := range ix.ids {
			toks[i] = tokenize(sourceText(ix.docs[id]))
			seen := map[string]bool{}
			for _, t := range toks[i] {
				if !seen[t] {
					seen[t] = true
					df[t]++
				}
			}
		}
		for i, id := range ix.ids {
			score := 1.0
			if len(c.Terms) > 0 {
				score = 0
				for _, qt := range c.Terms {
					tf := 0
					for _, t := range toks[i] {
						if t == qt {
							tf++
						}
					}
					score += float64(tf) * (1 + math.Log(float64(len(ix.ids))/float64(df[qt]+1)))
				}
			}
			if score > 0 {
				hits = append(hits, hit{id: id, index: n, score: math.Round(score*1e4) / 1e4, src: ix.docs[id]})
			}
		}
	}
	b.mu.RUnlock()
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].score > hits[j].score })

	out := []any{}
	maxScore := any(nil)
	if len(hits) > 0 {
		maxScore = hits[0].score
	}
	for _, h := range hits[min(c.From, len(hits)):min(c.From+c.Size, len(hits))] {
		out = append(out, map[string]any{"_index": h.index, "_id": h.id, "_score": h.score, "_source": h.src})
	}
	res := map[string]any{
		"took": 1, "timed_out": false,
		"_shards": map[string]int{"total": 1, "successful": 1, "skipped": 0, "failed": 0},
		"hits": map[string]any{
			"total":     map[string]any{"value": len(hits), "relation": "eq"},
			"max_score": maxScore,
			"hits":      out,
		},
	}
	if scroll {
		next := c
		next.From += c.Size
		id, _ := json.Marshal(next)
		res["_scroll_id"] = base64.RawURLEncoding.EncodeToString(id)
	}
	writeJSON(w, 200, res)
}

// sourceText is the text the engine indexes: every string value of the
// document.
func sourceText(src json.RawMessage) string {
	var v any
	_ = json.Unmarshal(src, &v)
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			b.WriteString(v)
			b.WriteByte(' ')
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(v[k])
			}
		}
	}
	walk(v)
	return b.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = 500, []byte(`{"error":"encoding"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func esError(w http.ResponseWriter, status int, typ, reason string) {
	writeJSON(w, status, map[string]any{
		"error":  map[string]any{"root_cause": []any{map[string]string{"type": typ, "reason": reason}}, "type": typ, "reason": reason},
		"status": status,
	})
}
