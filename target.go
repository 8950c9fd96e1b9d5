package sluice

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/sluiceproxy/sluice/internal/canonical"
)

// canonicalRequest returns r with its request target in the one canonical
// spelling that every hook decides on and that the upstream receives
// (see internal/canonical and docs/security.md): the path with dot
// segments resolved, unreserved characters decoded and slashes merged,
// the host lowercased, IDNA-encoded, without trailing dot or default port.
// The query is never touched. r itself is returned, with no allocation,
// when it is canonical already; otherwise a shallow copy is.
//
// A target that has no canonical form without changing its meaning (an
// encoded slash unless keepEncodedSlash, a backslash, an encoded NUL, ".."
// above the root, a malformed host) is refused with a 400 *Error.
func canonicalRequest(r *http.Request, keepEncodedSlash bool) (*http.Request, error) {
	if r.Method == http.MethodConnect {
		return canonicalConnect(r)
	}
	if r.URL.Opaque != "" || r.URL.Scheme != "" && r.URL.Scheme != "http" && r.URL.Scheme != "https" {
		return nil, badTarget(fmt.Errorf("not an origin-form or http(s) absolute-form target: %q", r.RequestURI))
	}
	if r.URL.User != nil {
		// RFC 9110 §4.2.4: userinfo in an http(s) URI is an error. A
		// helper or policy reading the URL as a string could take
		// "http://allowed.example@blocked.example/" for the first host.
		return nil, badTarget(errors.New("userinfo in request target")) // not quoted: it may hold a password
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if r.URL.Scheme != "" {
		scheme = r.URL.Scheme
	}
	orig := r.URL.EscapedPath()
	escaped := orig
	if escaped == "" {
		escaped = "/" // absolute-form without a path: "http://host"
	}
	p, err := canonical.Path(escaped, keepEncodedSlash)
	if err != nil {
		return nil, badTarget(err)
	}
	host, err := canonical.Host(r.Host, scheme)
	if err != nil {
		return nil, badTarget(fmt.Errorf("%w %q", err, r.Host))
	}
	urlHost, err := canonical.Host(r.URL.Host, scheme)
	if err != nil {
		return nil, badTarget(fmt.Errorf("%w %q", err, r.URL.Host))
	}
	if p == orig && host == r.Host && urlHost == r.URL.Host {
		return r, nil
	}
	c := new(http.Request)
	*c = *r
	u := *r.URL
	u.Host = urlHost
	if err := setEscapedPath(&u, p); err != nil {
		return nil, badTarget(err)
	}
	c.URL = &u
	c.Host = host
	c.RequestURI = u.RequestURI()
	if u.IsAbs() {
		c.RequestURI = u.String() // absolute-form stays absolute
	}
	return c, nil
}

// canonicalConnect returns a CONNECT request with its authority-form
// target (RFC 9112 §3.2.3: host and port, nothing else) in canonical
// form, in URL.Host, Host and RequestURI alike. The port is required.
func canonicalConnect(r *http.Request) (*http.Request, error) {
	u := r.URL
	if u.Scheme != "" || u.Opaque != "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" ||
		u.Host == "" || r.RequestURI != u.Host {
		return nil, badTarget(fmt.Errorf("CONNECT target %q is not host:port", r.RequestURI))
	}
	authority, err := canonical.Host(u.Host, "")
	if err != nil {
		return nil, badTarget(fmt.Errorf("%w %q", err, u.Host))
	}
	if _, port, err := net.SplitHostPort(authority); err != nil || port == "" || port == "0" {
		return nil, badTarget(fmt.Errorf("CONNECT target %q without a port", u.Host))
	}
	if authority == u.Host && r.Host == authority {
		return r, nil
	}
	c := new(http.Request)
	*c = *r
	c.URL = &url.URL{Host: authority}
	c.Host = authority
	c.RequestURI = authority
	return c, nil
}

// setEscapedPath sets u's Path and RawPath from an escaped path.
func setEscapedPath(u *url.URL, escaped string) error {
	dec, err := url.PathUnescape(escaped)
	if err != nil {
		return err
	}
	u.Path, u.RawPath = dec, escaped
	if u.EscapedPath() != escaped {
		return fmt.Errorf("path %q has no escaped form of its own", escaped)
	}
	if dec2 := (&url.URL{Path: dec}).EscapedPath(); dec2 == escaped {
		u.RawPath = "" // the default encoding: net/url keeps RawPath empty then
	}
	return nil
}

func badTarget(err error) error {
	return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("sluice: bad request target: %w", err)}
}
