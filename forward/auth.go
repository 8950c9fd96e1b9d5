package forward

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/canonical"
)

// AllowHosts returns a sluice.Authorizer that lets a request through only
// if the host it is for (a CONNECT's authority, an absolute-form
// request's host: the one Director connects to; else the Host header)
// matches one of hosts, and denies
// it with 403 otherwise. A pattern is a name ("example.com": that name
// only), a wildcard ("*.example.com": every name under it, at any
// depth, not example.com itself) or an IP literal ("192.0.2.1",
// "[2001:db8::1]"), optionally with a port ("example.com:8443": that port
// only; without one, any port).
//
// Patterns and requests are compared in canonical form: case, a trailing
// dot, IDNA (UTS #46: "BÜCHER.example" is "xn--bcher-kva.example"), IPv6
// spellings and a default port never make a request slip past a pattern
// or miss it; an address written as a number ("2130706433", "0x7f.1") is
// refused by the Proxy before any Authorizer sees it. A name is matched
// as a name, not as the addresses it resolves to: pair AllowHosts with
// Director's address check. AllowHosts panics if a pattern is malformed,
// as http.ServeMux.Handle does.
func AllowHosts(hosts ...string) sluice.Authorizer {
	type pattern struct {
		name     string // canonical, without the "*."
		port     string // "" for any port
		wildcard bool
	}
	pats := make([]pattern, 0, len(hosts))
	for _, h := range hosts {
		var p pattern
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			p.wildcard, h = true, rest
		}
		c, err := canonical.Host(h, "")
		if err != nil || c == "" {
			panic(fmt.Sprintf("forward: AllowHosts: bad host pattern %q", h))
		}
		p.name = c
		if host, port, err := net.SplitHostPort(c); err == nil {
			p.name, p.port = host, port
			if strings.Contains(host, ":") {
				p.name = "[" + host + "]"
			}
		}
		if _, err := netip.ParseAddr(trimBrackets(p.name)); err == nil && p.wildcard {
			panic(fmt.Sprintf("forward: AllowHosts: wildcard on an IP address %q", h))
		}
		pats = append(pats, p)
	}
	return sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		host, port := requestHost(pr.In)
		for _, p := range pats {
			if p.port != "" && p.port != port {
				continue
			}
			if p.wildcard && strings.HasSuffix(host, "."+p.name) || !p.wildcard && host == p.name {
				return sluice.Allow, nil
			}
		}
		return sluice.Deny(http.StatusForbidden, "403 forbidden: host not allowed\n"), nil
	})
}

// requestHost returns the canonical host a request goes to, IPv6 literals
// in brackets, and its port, the scheme's default if it has none.
func requestHost(r *http.Request) (host, port string) {
	hp := r.Host
	if r.URL.Host != "" {
		// A CONNECT's authority or an absolute-form request's host: the
		// one Director connects to, whatever a Host header says.
		hp = r.URL.Host
	}
	if h, p, err := net.SplitHostPort(hp); err == nil {
		if strings.Contains(h, ":") {
			h = "[" + h + "]"
		}
		return h, p
	}
	scheme := r.URL.Scheme
	if scheme == "" && r.TLS != nil {
		scheme = "https"
	}
	if scheme == "https" {
		return hp, "443"
	}
	return hp, "80"
}

// BasicAuth returns a sluice.Authorizer that asks forward-proxy clients
// for a user name and password (RFC 9110 §11.7, RFC 7617): a request
// without valid credentials in Proxy-Authorization is answered 407 Proxy
// Authentication Required with Proxy-Authenticate: Basic realm="realm",
// charset="UTF-8", which curl -x, browsers and Go's http.Transport answer
// with the credentials of their proxy URL. verify gets the user and
// password (compare them in constant time, crypto/subtle); a request is
// let through when it reports true. Proxy-Authorization and the other
// Proxy-* fields are hop-by-hop: the Proxy never forwards them.
//
// Basic credentials are readable by anyone on the way: serve the proxy
// over TLS (sluice.Server.ServeTLS, and an https:// proxy URL) unless
// the network between clients and proxy is trusted.
func BasicAuth(realm string, verify func(user, password string) bool) sluice.Authorizer {
	challenge := `Basic realm=` + strconv.Quote(realm) + `, charset="UTF-8"`
	deny := sluice.Decision{Response: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Proxy-Authenticate", challenge)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusProxyAuthRequired)
		_, _ = w.Write([]byte("407 proxy authentication required\n"))
	})}
	return sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		vv := pr.In.Header["Proxy-Authorization"]
		if len(vv) != 1 {
			return deny, nil
		}
		scheme, creds, ok := strings.Cut(strings.TrimSpace(vv[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Basic") {
			return deny, nil
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(creds))
		if err != nil {
			return deny, nil
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || !verify(user, pass) {
			return deny, nil
		}
		return sluice.Allow, nil
	})
}
