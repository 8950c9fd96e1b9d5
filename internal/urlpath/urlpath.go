// Package urlpath matches, strips and joins URL paths the way sluice's
// directors do (the root's PrefixDirector and balance.Pool), so that a prefix
// means the same thing everywhere.
package urlpath

import (
	"net/url"
	"strings"
)

// HasPrefix reports whether path is under prefix. A prefix that ends in
// "/" matches every path that starts with it; one that does not matches
// only at a segment boundary: "/api" matches "/api" and "/api/x", not
// "/apix".
func HasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	if strings.HasSuffix(prefix, "/") || len(path) == len(prefix) {
		return true
	}
	return path[len(prefix)] == '/'
}

// StripPrefix removes prefix (its trailing slash ignored) from the start
// of u's escaped path, keeping the result rooted: "/api/users" without
// "/api" is "/users", and "/api" is "/". The caller checks HasPrefix
// first, on u.EscapedPath() and with prefix in escaped form. It works on
// the escaped form so that an encoded slash stays one: stripping the
// decoded path made "/api%2F..%2Fx" "/../x" for the upstream.
func StripPrefix(u *url.URL, prefix string) {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return
	}
	esc := "/" + strings.TrimPrefix(strings.TrimPrefix(u.EscapedPath(), prefix), "/")
	p, err := url.PathUnescape(esc)
	if err != nil {
		return // not reached: esc is a tail of a valid escaped path
	}
	u.Path, u.RawPath = p, esc
	if (&url.URL{Path: p}).EscapedPath() == esc {
		u.RawPath = "" // the default encoding: net/url keeps RawPath empty then
	}
}

// Join joins a and b with exactly one slash between them, as
// httputil.ReverseProxy joins a target's path and a request's.
func Join(a, b string) string {
	aslash := strings.HasSuffix(a, "/")
	bslash := strings.HasPrefix(b, "/")
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}
