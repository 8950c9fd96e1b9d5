// Package sluice builds selective proxies: HTTP reverse proxies that pass
// almost every request through untouched, streaming, and capture a few URLs
// to do something special with them.
//
// A Proxy is an http.Handler. Its Director picks the upstream; an optional
// Authorizer decides whether a request may pass and as whom; routes added
// with Handle capture requests by http.ServeMux pattern and hand them to an
// Interceptor, which may answer locally, rewrite the request, or call the
// upstream and transform its response. Everything no route claims goes
// through the transparent default, which streams both ways with bounded
// memory, keeps framing, trailers and 1xx responses, removes hop-by-hop
// headers (RFC 9110 §7.6.1) and sets forwarding headers by a trusted-proxy
// policy.
//
//	upstream, _ := url.Parse("http://127.0.0.1:9200")
//	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: upstream}}
//	p.HandleFunc("GET /status", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
//		_, err := io.WriteString(w, "ok\n")
//		return err
//	})
//	(&sluice.Server{Addr: ":8080", Handler: p}).ListenAndServe()
//
// A Proxy works under any server: Server is sluice's own, HTTP/1.1 with
// the smallest cost per connection (an idle keep-alive connection holds
// no buffer and only a small goroutine) and HTTP/2, over TLS
// (ListenAndServeTLS: ALPN h2 and http/1.1) or in cleartext (h2c with
// prior knowledge when Protocols allows it); http.Server works too. Serve
// runs either until a context ends, then shuts it and the Proxy's
// WebSocket tunnels down gracefully.
//
// Every request target is put in one canonical spelling before any hook
// runs, and that is what routes, Authorizers, Directors and the upstream
// all see; a target with no unambiguous spelling is refused with 400 (see
// docs/security.md).
//
// Hooks see the request twice: ProxyRequest.In as the client sent it, and
// ProxyRequest.Out, the request that will go upstream, already sanitized
// before any hook runs, so that a hook cannot forward by accident what the
// client smuggled in.
//
// Failures map to statuses in one place, StatusFor: 502 when the upstream
// cannot be reached or answers garbage, 503 when no upstream is available,
// 504 on timeouts, 499 (logged only) when the client went away. A failure
// after the response started aborts the client connection, so that a
// truncated body never looks complete.
//
// Features built on this API live in their own packages: load balancing
// over a dynamic pool of upstreams is package balance (balance.Pool is a
// Director), and the client a target runs to register itself with it is
// package balance/register; package squid asks Squid url_rewrite helpers
// about each request (squid.Helper is an Authorizer and a Director);
// package identity signs identity headers on the proxy and verifies them
// in upstream applications; package upload is the application side of
// Upload (the plan it answers a pre-authorization with, the checks of the
// tokens the proxy sends). Upstream applications import identity, upload
// and balance/register without this package, which they do not depend on.
//
// # Options
//
// One convention holds across the module, that of net/http and
// httputil.ReverseProxy: configuration is a struct with exported fields
// whose zero value is useful, each field documented with what "If zero"
// (or "If nil") means, and Default… constants for the values chosen then;
// a negative duration turns a bound off where that is allowed. A
// constructor exists only where something must start (squid.Start starts
// helper processes) and is paired with Close. There are no positional
// booleans and no functional options. Per-request settings are methods of
// ProxyRequest (SetURL, SetTimeout, BufferBody, SetBody).
package sluice
