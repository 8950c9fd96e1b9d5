package sluice

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluiceproxy/sluice/internal/canonical"
	"github.com/sluiceproxy/sluice/internal/urlpath"
)

// A Director picks the upstream of a forwarded request: it sets the
// outbound request's scheme and host (usually with ProxyRequest.SetURL) and
// may rewrite its path, query and headers. It runs after the Authorizer and
// the route's Interceptor, and again for each retry (see
// ProxyRequest.Attempt).
//
// Direct returns ErrNoRoute when it has no upstream for the request (the
// Proxy's Fallback serves it) and ErrNoUpstream when the upstreams it
// would use are all unavailable (503). Any other error fails the request
// with 502. A Director that leaves an invalid target (empty host, control
// characters) also gets 502: the Proxy never sends a malformed request.
//
// A CONNECT request (a tunnel) reaches the Director too, once (there are
// no retries): to open the tunnel, the Director sets pr.Out.URL to
// tcp://host:port, the address to connect to (package forward's Director
// sets the authority the client named). Any other target refuses the
// CONNECT with 405, so Directors written for reverse proxying, which set
// http(s) targets, never open tunnels. See docs/authorization.md.
type Director interface {
	Direct(pr *ProxyRequest) error
}

// DirectorFunc adapts a function to the Director interface.
type DirectorFunc func(pr *ProxyRequest) error

// Direct calls f(pr).
func (f DirectorFunc) Direct(pr *ProxyRequest) error { return f(pr) }

// An Observer is a Director that wants to know how each attempt it
// directed ended, to keep health or load statistics. The Proxy calls
// Observe once per attempt: when the attempt failed, or when the response
// body is closed (its end, or the end of the tunnel for a 101); Result.Err
// is nil for a response whose body ended cleanly, whatever its status.
// Pool is an Observer.
type Observer interface {
	Observe(pr *ProxyRequest, res Result)
}

// ErrNoRoute is returned by a Director that has no upstream for a request.
// The Proxy serves such a request with its Fallback handler, or 404.
var ErrNoRoute = errors.New("sluice: no route for request")

// ErrNoUpstream is returned by a Director whose upstreams are all
// unavailable. The Proxy answers 503 Service Unavailable.
var ErrNoUpstream = errors.New("sluice: no upstream available")

// SingleHost is a Director that sends every request to Target. The
// target's path is joined in front of the request path and its query
// merged with the request's, as httputil.NewSingleHostReverseProxy does.
//
//	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: upstream}}
type SingleHost struct {
	// Target is the upstream: an http, https, h2c or unix URL. A target
	// without scheme or host fails every request with 502, logged as a
	// Director bug.
	Target *url.URL

	// PreserveHost keeps the client's Host header. If false, the outbound
	// Host header is the target's host.
	PreserveHost bool
}

// Direct implements Director.
func (d *SingleHost) Direct(pr *ProxyRequest) error {
	if !validTarget(d.Target) {
		return fmt.Errorf("%w: SingleHost.Target %v needs a scheme and a host", errBadTarget, d.Target)
	}
	pr.SetURL(d.Target)
	if d.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	return nil
}

// PrefixDirector is a Director that picks the upstream by host and path prefix.
// The most specific route wins: a route with a host beats one without, and
// a longer path prefix beats a shorter one. Build it with Add.
//
// The zero value has no routes and answers ErrNoRoute for every request.
// A PrefixDirector must not be modified while the Proxy serves requests.
type PrefixDirector struct {
	routes []hostPathRoute
}

// PrefixOptions tune one entry of a PrefixDirector.
type PrefixOptions struct {
	// StripPrefix removes the matched path prefix before forwarding, so
	// "/api/users" routed by "/api/" reaches the upstream as "/users".
	StripPrefix bool
	// PreserveHost keeps the client's Host header instead of the target's.
	PreserveHost bool
}

type hostPathRoute struct {
	host   string // lower case, no port; "" matches any host
	prefix string
	target *url.URL
	opts   PrefixOptions
}

// Add routes requests whose host and path match pattern to target. The
// pattern is "host/prefix" or "/prefix": "files.example.com/" matches every
// path on that host, "/api/" every host's paths under /api/. A prefix that
// does not end in "/" matches only at a segment boundary ("/api" matches
// "/api" and "/api/x", not "/apix"). Add returns r to allow chaining and
// panics on an invalid pattern or target.
func (r *PrefixDirector) Add(pattern string, target *url.URL, opts PrefixOptions) *PrefixDirector {
	mustTarget(target)
	i := strings.IndexByte(pattern, '/')
	if i < 0 {
		panic(fmt.Sprintf("sluice: route pattern %q has no path", pattern))
	}
	host, err := canonical.Host(pattern[:i], "")
	if err != nil || strings.Contains(host, ":") && !strings.HasSuffix(host, "]") {
		panic(fmt.Sprintf("sluice: route pattern %q: bad host", pattern))
	}
	// The prefix is matched against the canonical escaped path, the
	// one the route table matched: "/api" never matches "/api%2Fx",
	// which is one segment to the Proxy (see KeepEncodedSlashes).
	prefix, err := canonical.Path(pattern[i:], true)
	if err != nil {
		panic(fmt.Sprintf("sluice: route pattern %q: bad path: %v", pattern, err))
	}
	r.routes = append(r.routes, hostPathRoute{
		host:   host,
		prefix: prefix,
		target: target,
		opts:   opts,
	})
	return r
}

// Direct implements Director.
func (r *PrefixDirector) Direct(pr *ProxyRequest) error {
	host := requestHost(pr.In)
	path := pr.Out.URL.EscapedPath()
	var best *hostPathRoute
	for i := range r.routes {
		rt := &r.routes[i]
		if rt.host != "" && rt.host != host {
			continue
		}
		if !urlpath.HasPrefix(path, rt.prefix) {
			continue
		}
		if best == nil || better(rt, best) {
			best = rt
		}
	}
	if best == nil {
		return ErrNoRoute
	}
	if best.opts.StripPrefix {
		urlpath.StripPrefix(pr.Out.URL, best.prefix)
	}
	pr.SetURL(best.target)
	if best.opts.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	return nil
}

func better(a, b *hostPathRoute) bool {
	if (a.host != "") != (b.host != "") {
		return a.host != ""
	}
	return len(a.prefix) > len(b.prefix)
}

// requestHost returns the request's host without port. The Proxy has
// made it canonical (lower case, no trailing dot: see canonicalRequest).
func requestHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.Host); err == nil {
		return host
	}
	return r.Host
}

// knownScheme reports whether an upstream target's scheme is one the
// engine speaks.
func knownScheme(s string) bool { return s == "http" || s == "https" || s == "h2c" || s == "unix" }

func mustTarget(target *url.URL) {
	if !validTarget(target) {
		panic(fmt.Sprintf("sluice: invalid upstream target %v: need scheme and host", target))
	}
}

// validTarget reports whether target names an upstream: a scheme and a
// host, or a unix socket path.
func validTarget(target *url.URL) bool {
	if target != nil && target.Scheme == "unix" && strings.HasPrefix(unixSocket(target), "/") {
		return true
	}
	return target != nil && target.Scheme != "" && target.Host != ""
}

// unixSocket returns the path of the Unix-domain socket that a unix:
// target names: "unix:///run/app.sock" and "unix:/run/app.sock" parse
// with it as their path; on an outbound request (after SetURL) it is the
// URL's host.
func unixSocket(u *url.URL) string {
	if u.Host != "" {
		return u.Host
	}
	return u.Path
}

// rewriteURL points u at target the way httputil.ProxyRequest.SetURL does.
// A unix: target's path is its socket's, which goes to u.Host: it is not
// joined to the request path.
func rewriteURL(u, target *url.URL) {
	u.Scheme = target.Scheme
	if target.Scheme == "unix" {
		u.Host = unixSocket(target)
	} else {
		u.Host = target.Host
		u.Path, u.RawPath = joinURLPath(target, u)
	}
	if target.RawQuery == "" || u.RawQuery == "" {
		u.RawQuery = target.RawQuery + u.RawQuery
	} else {
		u.RawQuery = target.RawQuery + "&" + u.RawQuery
	}
}

func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.Path == "" && a.RawPath == "" {
		return b.Path, b.RawPath
	}
	if a.RawPath == "" && b.RawPath == "" {
		return urlpath.Join(a.Path, b.Path), ""
	}
	apath := a.EscapedPath()
	bpath := b.EscapedPath()
	aslash := strings.HasSuffix(apath, "/")
	bslash := strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

// checkTarget reports whether the outbound request can be written without
// ambiguity: a known scheme (http, https, h2c for HTTP/2 with prior
// knowledge, unix for a Unix-domain socket: see Proxy.Transport), a host
// with no control characters or spaces (for unix, an absolute socket
// path without control characters).
func checkTarget(out *http.Request) error {
	u := out.URL
	if u.Scheme == "tcp" && out.Method == http.MethodConnect {
		// A tunnel's target: host:port and nothing else.
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("%w: tunnel target %q is not tcp://host:port", errBadTarget, u.String())
		}
		out.Host = ""
	} else if !knownScheme(u.Scheme) {
		return fmt.Errorf("%w: scheme %q", errBadTarget, u.Scheme)
	}
	hosts := []string{u.Host, out.Host}
	if u.Scheme == "unix" {
		if !strings.HasPrefix(u.Host, "/") {
			return fmt.Errorf("%w: unix target %q is not an absolute socket path", errBadTarget, u.Host)
		}
		for i := 0; i < len(u.Host); i++ {
			if c := u.Host[i]; c < ' ' || c == 0x7f {
				return fmt.Errorf("%w: invalid socket path %q", errBadTarget, u.Host)
			}
		}
		hosts = hosts[1:]
	} else if u.Host == "" {
		return fmt.Errorf("%w: empty host", errBadTarget)
	}
	for _, h := range hosts {
		for i := 0; i < len(h); i++ {
			if c := h[i]; c <= ' ' || c == 0x7f || c == '/' || c == '\\' || c == '@' {
				return fmt.Errorf("%w: invalid host %q", errBadTarget, h)
			}
		}
	}
	return nil
}
