package sluice

import (
	"log/slog"
	"net/http"
	"net/netip"
)

// Chain returns an Authorizer that runs as in order and allows a request
// only if every one of them allows it. The first deny or error ends the
// chain and is the chain's answer, so a cheap check (an IP allowlist)
// placed first spares the expensive ones (a subrequest). Nil entries are
// skipped; an empty chain allows everything.
//
// Each Authorizer sees the outbound request as the previous ones left it,
// so a later one may read identity headers an earlier one set.
func Chain(as ...Authorizer) Authorizer {
	list := make([]Authorizer, 0, len(as))
	for _, a := range as {
		if a != nil {
			list = append(list, a)
		}
	}
	return chain(list)
}

type chain []Authorizer

func (c chain) Authorize(pr *ProxyRequest) (Decision, error) {
	for _, a := range c {
		d, err := a.Authorize(pr)
		if err != nil || !d.Allow {
			return d, err
		}
	}
	return Allow, nil
}

// FailOpen returns an Authorizer that answers as a does, except that an
// error of a allows the request instead of failing it closed. The error is
// logged on logger (slog.Default() if nil) at warning level. Use it only
// for checks whose outage must not take the service down, such as an
// advisory filter; never around the check that establishes identity.
func FailOpen(a Authorizer, logger *slog.Logger) Authorizer {
	return AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
		d, err := a.Authorize(pr)
		if err == nil {
			return d, nil
		}
		l := logger
		if l == nil {
			l = slog.Default()
		}
		if id := pr.rec.RequestID; id != "" {
			l = l.With("request_id", id)
		}
		l.Warn("sluice: authorizer failed, allowing (fail open)",
			"method", pr.In.Method, "uri", pr.In.RequestURI, "err", err)
		return Allow, nil
	})
}

// AllowFrom returns an Authorizer that allows requests whose client
// address (ProxyRequest.ClientAddr, which honours TrustedProxies) is in
// one of prefixes and denies every other one with 403 Forbidden.
func AllowFrom(prefixes ...netip.Prefix) Authorizer {
	ps := append([]netip.Prefix(nil), prefixes...)
	return AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
		a := pr.ClientAddr()
		for _, p := range ps {
			if p.Contains(a) {
				return Allow, nil
			}
		}
		return Deny(http.StatusForbidden, "403 forbidden\n"), nil
	})
}
