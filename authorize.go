package sluice

import (
	"net/http"
)

// An Authorizer decides whether a request may proceed, and as whom. It runs
// after the request was sanitized and matched against the routes, before
// any Interceptor or Director.
//
// To allow, it returns Allow (or a Decision with Allow set); it may first
// add identity headers to pr.Out and cookies to pr.ResponseHeader(). To deny,
// it returns a Decision whose Response writes the client's answer (see Deny
// and Redirect). A non-nil error fails closed: the client gets the status
// StatusFor(err) (500 unless the error says otherwise) and nothing reaches
// the upstream.
type Authorizer interface {
	Authorize(pr *ProxyRequest) (Decision, error)
}

// AuthorizerFunc adapts a function to the Authorizer interface.
type AuthorizerFunc func(pr *ProxyRequest) (Decision, error)

// Authorize calls f(pr).
func (f AuthorizerFunc) Authorize(pr *ProxyRequest) (Decision, error) { return f(pr) }

// Decision is an Authorizer's answer. The zero value denies with 403
// Forbidden, so a forgotten field fails closed.
type Decision struct {
	// Allow lets the request proceed.
	Allow bool

	// Response writes the client's answer when Allow is false. Headers
	// added to ProxyRequest.ResponseHeader are added to it. If nil, the
	// client gets 403 Forbidden.
	Response http.Handler
}

// Allow is the Decision that lets a request proceed.
var Allow = Decision{Allow: true}

// Deny returns a Decision that answers the client with status and a plain
// text body.
func Deny(status int, body string) Decision {
	return Decision{Response: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})}
}

// Redirect returns a Decision that redirects the client to url with code
// (a 3xx status).
func Redirect(url string, code int) Decision {
	return Decision{Response: http.RedirectHandler(url, code)}
}

// authorize runs the Proxy's Authorizer and the route's. It reports
// whether the request may proceed; when it may not, the answer was written.
func (p *Proxy) authorize(w http.ResponseWriter, pr *ProxyRequest) bool {
	for _, a := range [2]Authorizer{p.Authorizer, pr.route.authorizer()} {
		if a == nil {
			continue
		}
		d, err := a.Authorize(pr)
		if err != nil {
			p.fail(w, pr.In, pr, &authError{err})
			return false
		}
		if !d.Allow {
			pr.rec.ErrorClass = classPolicy
			h := d.Response
			if h == nil {
				h = http.HandlerFunc(forbidden)
			}
			mergeHeader(w.Header(), pr.respHeader)
			h.ServeHTTP(w, pr.In)
			return false
		}
	}
	return true
}

func forbidden(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "403 forbidden", http.StatusForbidden)
}

// authError marks an Authorizer failure so that it maps to 500 and is
// logged as such.
type authError struct{ err error }

func (e *authError) Error() string { return "authorizer: " + e.err.Error() }
func (e *authError) Unwrap() error { return e.err }
