package main

// article is a document of the demo corpus.
type article struct {
	Title  string   `json:"title"`
	Text   string   `json:"text"`
	Tags   []string `json:"tags"`
	Author string   `json:"author"`
}

// corpus is the demo index "articles": short notes on proxies and search,
// some short and focused, some long and repetitive, so that an engine
// that counts raw term frequencies and a length-normalized ranking like
// BM25 disagree.
var corpus = []article{
	{"Streaming proxy basics", "A streaming proxy forwards bytes as they arrive instead of buffering whole bodies.", []string{"proxy", "streaming"}, "ana"},
	{"The proxy FAQ", "Proxy questions: what is a proxy, why a proxy, which proxy, proxy versus gateway, proxy versus load balancer, proxy logs, proxy caches, proxy headers, proxy timeouts, proxy errors and every other proxy topic we could think of, in one very long page about the proxy.", []string{"faq"}, "bo"},
	{"Backpressure in streaming systems", "Streaming without backpressure fills memory; a blocking write is the simplest backpressure.", []string{"streaming"}, "chen"},
	{"Reranking search results", "A reranker reorders the top hits of a search engine with a better but slower model.", []string{"search", "rerank"}, "dev"},
	{"BM25 explained", "BM25 scores a document by term frequency with saturation and by document length normalization.", []string{"search", "bm25"}, "eli"},
	{"Selective proxy", "A selective proxy passes everything through and captures a few URLs, for example search requests to rerank.", []string{"proxy", "search"}, "ana"},
	{"Streaming HTML rewriting", "Rewriting HTML while streaming keeps memory bounded: tokenize, rewrite links, inject a snippet.", []string{"html", "streaming"}, "fay"},
	{"Long notes on streaming, streaming and more streaming", "Streaming streaming streaming: these notes repeat the word streaming many times, streaming here, streaming there, streaming everywhere, and say little about any proxy or proxy design, though a proxy is mentioned.", []string{"notes"}, "gus"},
	{"Load balancer health checks", "A load balancer removes targets that fail health checks and retries idempotent requests.", []string{"balancer"}, "hal"},
	{"WebSocket tunnels", "A proxy tunnels WebSocket connections after the upgrade handshake and closes them on shutdown.", []string{"proxy", "websocket"}, "ivy"},
	{"Elasticsearch search API", "The search API takes a query, size and from, and returns hits with scores and sources.", []string{"search", "elasticsearch"}, "jo"},
	{"Caching proxies", "A caching proxy stores responses and revalidates them with ETag and Last-Modified.", []string{"proxy", "cache"}, "kim"},
	{"Chunked transfer encoding", "Chunked encoding frames a streaming body of unknown length in HTTP/1.1.", []string{"http", "streaming"}, "lu"},
	{"Search relevance tuning", "Relevance tuning adjusts boosts, analyzers and similarity; reranking the top hits is another way.", []string{"search"}, "mo"},
	{"Upload offloading", "A gateway streams large uploads to object storage and forwards a signed description to the application.", []string{"upload", "streaming"}, "ned"},
	{"Proxy streaming pitfalls", "Pitfalls of a streaming proxy: buffering by accident, lost trailers, stale Content-Length after a rewrite.", []string{"proxy", "streaming"}, "oz"},
	{"Query expansion", "Query expansion adds synonyms to a search query to raise recall before reranking.", []string{"search"}, "pia"},
	{"Server-sent events through a proxy", "Server-sent events need a proxy that flushes every event: streaming without delay.", []string{"sse", "proxy", "streaming"}, "quin"},
	{"Timeouts", "Connect, header and idle timeouts keep a proxy responsive when upstreams hang.", []string{"proxy"}, "ray"},
	{"Neural rerankers", "Cross-encoder models rerank search hits by reading the query and the document together.", []string{"search", "rerank"}, "sue"},
}
