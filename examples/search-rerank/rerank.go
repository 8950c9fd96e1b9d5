package main

import (
	"context"
	"math"
	"sort"
	"strings"
	"unicode"
)

// A Reranker scores documents against a query; a larger score ranks
// higher. BM25 is the built-in one; a learned model (a cross-encoder
// behind an HTTP API, say) fits the same interface.
type Reranker interface {
	Rerank(ctx context.Context, query string, docs []string) ([]float64, error)
}

// BM25 is the Okapi BM25 ranking function (Robertson and Zaragoza, "The
// Probabilistic Relevance Framework: BM25 and Beyond", 2009), with the
// non-negative IDF Lucene uses. The collection statistics (document
// frequencies, average length) are those of the documents being
// reranked: the engine's top N hits.
type BM25 struct {
	K1, B float64
}

// DefaultBM25 has the usual parameters, as in Lucene and Elasticsearch.
var DefaultBM25 = BM25{K1: 1.2, B: 0.75}

// Rerank implements Reranker.
func (m BM25) Rerank(_ context.Context, query string, docs []string) ([]float64, error) {
	terms := tokenize(query)
	n := float64(len(docs))
	tfs := make([]map[string]int, len(docs))
	lens := make([]float64, len(docs))
	df := map[string]int{}
	var total float64
	for i, d := range docs {
		toks := tokenize(d)
		tf := make(map[string]int, len(toks))
		for _, t := range toks {
			tf[t]++
		}
		for t := range tf {
			df[t]++
		}
		tfs[i], lens[i] = tf, float64(len(toks))
		total += lens[i]
	}
	avg := 1.0
	if n > 0 && total > 0 {
		avg = total / n
	}
	scores := make([]float64, len(docs))
	for i := range docs {
		var s float64
		for _, t := range terms {
			f := float64(tfs[i][t])
			if f == 0 {
				continue
			}
			idf := math.Log(1 + (n-float64(df[t])+0.5)/(float64(df[t])+0.5))
			s += idf * f * (m.K1 + 1) / (f + m.K1*(1-m.B+m.B*lens[i]/avg))
		}
		scores[i] = s
	}
	return scores, nil
}

// tokenize lower-cases s and splits it into runs of letters and digits,
// a simple form of Elasticsearch's standard analyzer.
func tokenize(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// order returns the indices of scores from the highest score to the
// lowest; equal scores keep the engine's order.
func order(scores []float64) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	return idx
}
