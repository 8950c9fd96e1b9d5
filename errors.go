package sluice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
)

// StatusClientClosedRequest is the status logged (never written) when the
// client went away before the exchange ended, as nginx's 499.
const StatusClientClosedRequest = 499

// Error is an error that carries the HTTP status the client should get.
// Hooks return it to choose the status of a failure, e.g.
// &sluice.Error{Status: 413, Err: err}.
type Error struct {
	Status int
	Err    error
}

// Error returns the wrapped error's message, or the status text.
func (e *Error) Error() string {
	if e.Err == nil {
		return http.StatusText(e.Status)
	}
	return e.Err.Error()
}

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with status and a formatted message; %w wraps.
func Errorf(status int, format string, args ...any) error {
	return &Error{Status: status, Err: fmt.Errorf(format, args...)}
}

var (
	errBadTarget     = errors.New("sluice: director produced an invalid target")
	errClientGone    = errors.New("sluice: client went away")
	errClientTimeout = errors.New("sluice: client too slow")
)

// StatusFor is the one place that decides the status for a failure:
//
//   - an *Error: its Status (a request body the client stopped sending
//     for longer than the server's idle bound is one, with 408);
//   - the client went away (its context canceled): 499, logged, not written;
//   - ErrNoRoute: 404; ErrNoUpstream: 503;
//   - a timeout (dial, response header, context deadline): 504;
//   - a failed Authorizer: 500;
//   - anything else on the way to the upstream (connection refused or
//     reset, malformed response, invalid target): 502.
func StatusFor(err error) int {
	var se *Error
	var ae *authError
	var ne net.Error
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &se):
		return se.Status
	case errors.As(err, new(*dialRefusedError)):
		return http.StatusForbidden
	case errors.Is(err, errClientGone):
		return StatusClientClosedRequest
	case errors.Is(err, ErrNoRoute):
		return http.StatusNotFound
	case errors.Is(err, ErrNoUpstream):
		return http.StatusServiceUnavailable
	case errors.As(err, &ae):
		return http.StatusInternalServerError
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// isConnectError reports whether err happened while connecting to the
// upstream, so that nothing of the request reached it.
func isConnectError(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// fail reports a failed exchange: it logs one line and, if the response
// has not started, writes the error response. If it has started, it aborts
// the client connection with http.ErrAbortHandler.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, pr *ProxyRequest, err error) {
	if errors.Is(err, ErrNoRoute) {
		if p.Fallback != nil {
			if pr != nil {
				mergeHeader(w.Header(), pr.respHeader)
				r = pr.localRequest()
			}
			p.Fallback.ServeHTTP(w, r)
			return
		}
	}
	if pr != nil {
		err = pr.timedOut(err)
	}
	var se *Error
	if r.Context().Err() != nil && !errors.Is(err, errClientGone) && !errors.Is(err, errClientTimeout) &&
		!(errors.As(err, &se) && se.Status < 500) {
		// (A client too slow is still there, to get its 408, even if
		// the server canceled the context as net/http's does when a
		// read fails; so is one whose request was malformed, to get its
		// 400.)
		err = fmt.Errorf("%w: %w", errClientGone, err)
	}
	status := StatusFor(err)
	attrs := []any{
		"method", r.Method, "uri", r.RequestURI, "status", status, "err", err,
	}
	if pr != nil {
		pr.rec.Err = err
		if pr.rec.RequestID != "" {
			attrs = append(attrs, "request_id", pr.rec.RequestID)
		}
		if pr.Out != nil && pr.Out.URL.Host != "" {
			attrs = append(attrs, "upstream", pr.Out.URL.Host)
		}
		if len(pr.tried) > 0 {
			// Every upstream tried, the last one included.
			attrs = append(attrs, "attempts", pr.attempt+1, "tried", append(pr.tried[:len(pr.tried):len(pr.tried)], pr.Out.URL.Host))
		}
	}
	if errors.Is(err, errBadTarget) {
		attrs = append(attrs, "director_bug", true)
	}
	level := p.logger().Warn
	if status == StatusClientClosedRequest {
		level = p.logger().Info
	}
	var started bool
	if sw, ok := w.(interface{ started() bool }); ok {
		started = sw.started()
	}
	if started {
		level("sluice: exchange aborted after response started", attrs...)
		panic(http.ErrAbortHandler)
	}
	level("sluice: exchange failed", attrs...)
	if pr != nil {
		pr.rec.Status = status // unless something is written: see deliver
	}
	if status == StatusClientClosedRequest {
		// Nothing is written, and the connection is closed rather than
		// left for the server to finish with an empty 200 should the
		// client still be there.
		panic(http.ErrAbortHandler)
	}
	if pr != nil {
		mergeHeader(w.Header(), pr.respHeader)
	}
	if p.ErrorHandler != nil {
		p.ErrorHandler(w, r, err)
		return
	}
	writeError(w, status)
}

func writeError(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1")
	}
	if status == http.StatusRequestTimeout {
		// RFC 9110 §15.5.9: the rest of the request may still come.
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, fmt.Sprintf("%d %s\n", status, http.StatusText(status)))
}
