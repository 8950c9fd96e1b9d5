// Command search-rerank is a selective proxy in front of an
// Elasticsearch-compatible search API that improves the ranking of search
// results, in the manner of NBoost: it captures GET and POST
// /{index}/_search, asks the engine for the top N hits instead of the
// page the client wants, reranks them with BM25 over the fields named by
// -field (or another Reranker), and returns the client's page of the new
// order with each hit's new score in "_rerank_score". Every other request
// passes through untouched, byte for byte.
//
// With no flags it starts an embedded search backend that speaks the
// subset of the Elasticsearch API the demo needs, with a small built-in
// corpus in the index "articles":
//
//	go run ./examples/search-rerank
//	curl 'http://127.0.0.1:8080/articles/_search?q=proxy+streaming&size=3'
//	curl http://127.0.0.1:8080/sluice/status
//
// Against a real engine:
//
//	go run ./examples/search-rerank -upstream http://127.0.0.1:9200 -field title,body
//
// -metrics ADDR serves Prometheus metrics at http://ADDR/metrics.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
)

// config is the starter's configuration, from the flags.
type config struct {
	listen      string
	upstream    string
	topN        int
	fields      []string
	statusPath  string
	maxRequest  int64
	maxResponse int64
	maxWindow   int
	reranker    Reranker
	logger      *slog.Logger
	metrics     string // address serving /metrics, "" for none
}

// description is what -h prints before the flags.
const description = `search-rerank: a reranking proxy in front of an Elasticsearch-style API.

It captures GET and POST /{index}/_search, asks the engine for the top
-topn hits instead of the page the client wants, reranks them with BM25
over the -field fields, and returns the client's page of the new order.
Every other request passes through untouched. A size or from that is not
an integer, is negative, or goes past -max-window gets a 400. With no
flags it runs an embedded search backend with a small corpus:

  go run ./examples/search-rerank
  curl 'http://127.0.0.1:8080/articles/_search?q=proxy+streaming&size=3'

Flags:
`

// parseFlags parses the command line. With -h it prints the description
// and the flags to out and returns flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	var fields string
	fs := flag.NewFlagSet("search-rerank", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, description)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&cfg.upstream, "upstream", "", "search engine URL (default: an embedded demo backend)")
	fs.IntVar(&cfg.topN, "topn", 50, "number of hits to fetch from the engine and rerank")
	fs.StringVar(&fields, "field", "title,text", "comma-separated _source fields the reranker reads")
	fs.StringVar(&cfg.statusPath, "status", "/sluice/status", "path of the local status endpoint")
	fs.Int64Var(&cfg.maxRequest, "max-request", sluice.DefaultMaxRequestBody, "largest _search body rewritten; larger ones pass unmodified")
	fs.Int64Var(&cfg.maxResponse, "max-response", sluice.DefaultMaxResponseBody, "largest engine response reranked; larger ones fail with 502")
	fs.IntVar(&cfg.maxWindow, "max-window", DefaultMaxWindow, "largest from + size of a search (the engine's max_result_window); past it, or with a negative or non-integer size or from: 400")
	fs.StringVar(&cfg.metrics, "metrics", "", telemetry.Usage)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: every setting is a flag (see -h)", fs.Arg(0))
	}
	var errs []error
	for f := range strings.SplitSeq(fields, ",") {
		if f = strings.TrimSpace(f); f == "" || strings.HasPrefix(f, ".") || strings.HasSuffix(f, ".") || strings.Contains(f, "..") {
			errs = append(errs, fmt.Errorf("-field %q: want comma-separated field names such as title,text or author.name", fields))
			break
		}
		cfg.fields = append(cfg.fields, strings.TrimSpace(f))
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q: want host:port: %w", cfg.listen, err))
	}
	if err := telemetry.CheckAddr(cfg.metrics); err != nil {
		errs = append(errs, err)
	}
	if cfg.maxRequest <= 0 {
		errs = append(errs, fmt.Errorf("-max-request %d: want a positive size in bytes", cfg.maxRequest))
	}
	if cfg.maxResponse <= 0 {
		errs = append(errs, fmt.Errorf("-max-response %d: want a positive size in bytes", cfg.maxResponse))
	}
	if cfg.maxWindow == 0 {
		errs = append(errs, errors.New("-max-window 0: want at least 1"))
	}
	// newProxy checks the rest; without -upstream, run starts the demo
	// backend, so check with a stand-in.
	probe := cfg
	if probe.upstream == "" {
		probe.upstream = "http://127.0.0.1:9200"
	}
	if _, err := newProxy(probe); err != nil {
		errs = append(errs, err)
	}
	return cfg, errors.Join(errs...)
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "search-rerank:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "search-rerank:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.upstream == "" {
		backend, err := startBackend()
		if err != nil {
			return err
		}
		defer backend.Close()
		cfg.upstream = "http://" + backend.Addr
	}
	proxy, err := newProxy(cfg)
	if err != nil {
		return err
	}
	metrics, err := telemetry.Start(cfg.metrics, proxy, nil)
	if err != nil {
		return err
	}
	defer metrics.Close()
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	srv := &sluice.Server{Handler: metrics.Handler}
	base := "http://" + ln.Addr().String()
	slog.Info("search-rerank: proxying", "url", base+"/", "upstream", cfg.upstream,
		"try", base+"/articles/_search?q=proxy+streaming&size=3", "status", base+cfg.statusPath, "metrics", metrics.URL())

	return sluice.Serve(ctx, srv, ln, 0)
}

// newProxy builds the reranking proxy: the status endpoint answered
// locally, the captured search routes, and a counting pass-through for
// everything else.
func newProxy(cfg config) (*sluice.Proxy, error) {
	target, err := url.Parse(cfg.upstream)
	if err != nil || target.Host == "" || (target.Scheme != "http" && target.Scheme != "https") {
		return nil, fmt.Errorf("-upstream %q: want a URL like http://127.0.0.1:9200", cfg.upstream)
	}
	if cfg.topN <= 0 {
		return nil, fmt.Errorf("-topn %d: want a positive number", cfg.topN)
	}
	if cfg.maxWindow < 0 || cfg.maxWindow > 1<<30 {
		return nil, fmt.Errorf("-max-window %d: want 1 to %d", cfg.maxWindow, 1<<30)
	}
	if w := cmp.Or(cfg.maxWindow, DefaultMaxWindow); cfg.topN > w {
		return nil, fmt.Errorf("-topn %d: more than -max-window %d, the engine would refuse the rewritten searches", cfg.topN, w)
	}
	if !strings.HasPrefix(cfg.statusPath, "/") {
		return nil, fmt.Errorf("-status %q: want a path", cfg.statusPath)
	}
	logger := cfg.logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.reranker == nil {
		cfg.reranker = DefaultBM25
	}
	st := &stats{started: time.Now()}
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}, Logger: logger}
	p.Handle("GET "+cfg.statusPath, sluice.Local(statusHandler(st, cfg)))
	search := &searchHandler{
		topN: cfg.topN, fields: cfg.fields, reranker: cfg.reranker,
		maxRequest: cfg.maxRequest, maxResponse: cfg.maxResponse, maxWindow: cfg.maxWindow, stats: st, log: logger,
	}
	for _, pattern := range []string{"GET /{index}/_search", "POST /{index}/_search", "GET /_search", "POST /_search"} {
		p.Handle(pattern, search)
	}
	p.HandleFunc("/", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
		st.passed.Add(1)
		return pr.Forward(w)
	})
	return p, nil
}
