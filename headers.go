package sluice

import (
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are the hop-by-hop fields of RFC 9110 §7.6.1, plus the
// obsolete ones still seen in the wild (Keep-Alive, Proxy-Connection) and
// the proxy credentials of §11.7, which are meant for this hop only.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authentication-Info",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopByHop deletes the hop-by-hop fields of h: those named in
// Connection (RFC 9110 §7.6.1) first, then the fixed list. It reports
// whether the message asked for trailers with "TE: trailers".
func removeHopByHop(h http.Header) (teTrailers bool) {
	for _, v := range h["Connection"] {
		for sf := range strings.SplitSeq(v, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, v := range h["Te"] {
		if httpguts.HeaderValuesContainsToken([]string{v}, "trailers") {
			teTrailers = true
		}
	}
	for _, f := range hopHeaders {
		delete(h, f) // keys are canonical in parsed headers
	}
	return teTrailers
}

// sanitizeRequestHeader prepares the outbound request's header: hop-by-hop
// fields (Proxy-Authorization and Proxy-Connection among them) and Proxy
// are removed, "TE: trailers" is kept (gRPC and others need it) and
// an upgrade the proxy is willing to tunnel is announced again. An h2c
// upgrade is never forwarded: the proxy speaks HTTP/1.1 to the client.
//
// A client cannot make it drop a forwarding field (X-Forwarded-*,
// Forwarded, X-Real-Ip) by naming it in Connection: the proxy owns those
// (dropForged, setForwarded), and the chain a trusted proxy in front set
// must reach the upstream as the Proxy read it for ClientAddr, not
// replaced by that trusted proxy's own address.
func sanitizeRequestHeader(h http.Header, upgrade string) {
	if vv := h["Connection"]; len(vv) > 0 && namesForwarding(vv) {
		var keep []string
		for _, v := range vv {
			for sf := range strings.SplitSeq(v, ",") {
				if sf = textproto.TrimString(sf); sf != "" && !isForwardingToken(sf) {
					keep = append(keep, sf)
				}
			}
		}
		h["Connection"] = keep
	}
	if removeHopByHop(h) {
		h.Set("Te", "trailers")
	}
	delete(h, "Http2-Settings")
	// "Proxy" is no field of HTTP, and CGI-style upstreams take it for
	// their HTTP_PROXY setting ("httpoxy", CVE-2016-5385).
	delete(h, "Proxy")
	if upgrade != "" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upgrade)
	}
}

// namesForwarding reports whether Connection values name a forwarding
// field, without allocating.
func namesForwarding(vv []string) bool {
	for _, v := range vv {
		for sf := range strings.SplitSeq(v, ",") {
			if isForwardingToken(textproto.TrimString(sf)) {
				return true
			}
		}
	}
	return false
}

// isForwardingToken reports whether a Connection option names a forwarding
// field (isForwardingName) in any case.
func isForwardingToken(s string) bool {
	return len(s) > len("X-Forwarded-") && strings.EqualFold(s[:len("X-Forwarded-")], "X-Forwarded-") ||
		strings.EqualFold(s, "Forwarded") || strings.EqualFold(s, "X-Real-Ip")
}

// sanitizeResponseHeader removes hop-by-hop fields from an upstream
// response header. For a 101 response the Connection and Upgrade fields
// of the switch are set again.
func sanitizeResponseHeader(h http.Header, upgrade string) {
	removeHopByHop(h)
	if upgrade != "" {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", upgrade)
	}
}

// upgradeType returns the protocol a request asks to upgrade to, if the
// proxy may tunnel it: Connection must contain the "upgrade" token (any
// case, any position) and Upgrade must name one protocol other than h2c.
func upgradeType(h http.Header) string {
	if len(h["Upgrade"]) == 0 || !httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") {
		return ""
	}
	up := textproto.TrimString(h.Get("Upgrade"))
	if up == "" || strings.EqualFold(up, "h2c") || strings.ContainsAny(up, ", \t") {
		return ""
	}
	return up
}

// clientAddr returns the client's address: the TCP peer, or, when the peer
// is trusted, the rightmost address of X-Forwarded-For that is not (of
// Forwarded's for= values when there is no X-Forwarded-For). An entry
// that is not an address (see parseForwardedFor) ends the walk with an
// invalid address: a client the proxy cannot name is never taken for the
// trusted proxy that passed its request on.
func clientAddr(r *http.Request, peer netip.Addr, trusted []netip.Prefix) netip.Addr {
	if !isTrusted(peer, trusted) {
		return peer
	}
	addr := peer
	xff := r.Header["X-Forwarded-For"]
	if len(xff) == 0 && len(r.Header["Forwarded"]) > 0 {
		// A trusted proxy that speaks only RFC 7239 still names the
		// client: never take the proxy itself for it.
		xff = forwardedFor(r.Header["Forwarded"])
	}
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		if textproto.TrimString(v) == "" {
			return netip.Addr{} // a field with no entry names no one
		}
		for v != "" {
			var part string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				part, v = v[j+1:], v[:j]
			} else {
				part, v = v, ""
			}
			a, ok := parseForwardedFor(part)
			if !ok {
				return netip.Addr{}
			}
			addr = a
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

// forwardedFor returns the for= values of RFC 7239 Forwarded fields, one
// per forwarded-element in order, unquoted; an element without for=
// gives "" (not an address, so the client is unknown).
func forwardedFor(vv []string) []string {
	var out []string
	for _, v := range vv {
		for elem := range strings.SplitSeq(v, ",") {
			val := ""
			for pair := range strings.SplitSeq(elem, ";") {
				k, x, _ := strings.Cut(pair, "=")
				if strings.EqualFold(textproto.TrimString(k), "for") {
					val = strings.Trim(textproto.TrimString(x), `"`)
				}
			}
			if val == "" {
				val = "unknown"
			}
			out = append(out, val)
		}
	}
	return out
}

// parseForwardedFor parses one X-Forwarded-For entry in the forms load
// balancers send: an IPv4 or IPv6 address, either with a port
// ("1.2.3.4:5678", "[2001:db8::1]:443"), or an IPv6 address in brackets
// ("[2001:db8::1]"). Zones are dropped and IPv4-mapped addresses
// unmapped. Anything else ("unknown", a name, an obfuscated identifier of
// RFC 7239 §6.3) is not an address.
func parseForwardedFor(s string) (netip.Addr, bool) {
	s = textproto.TrimString(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

func peerAddr(r *http.Request) netip.Addr {
	// Zones are dropped: they are local names, and arbitrary bytes.
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// setForwarded sets X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto
// and the RFC 7239 Forwarded header on the outbound request. From an
// untrusted peer the client's values are replaced (dropForged removed
// them); from a trusted one the chains are extended and the host and
// proto kept.
func (p *Proxy) setForwarded(pr *ProxyRequest) {
	h := pr.Out.Header
	in := pr.In
	peer := pr.peer
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	peerStr := "unknown"
	if peer.IsValid() {
		peerStr = peer.String()
	}
	// One backing array for the four value slices: capped at one element
	// each, so an append by a hook reallocates instead of overwriting.
	vals := make([]string, 4)
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		vals[0] = strings.Join(prior, ", ") + ", " + peerStr
	} else {
		vals[0] = peerStr
	}
	h["X-Forwarded-For"] = vals[0:1:1]
	if len(h["X-Forwarded-Host"]) == 0 && in.Host != "" {
		vals[1] = in.Host
		h["X-Forwarded-Host"] = vals[1:2:2]
	}
	if len(h["X-Forwarded-Proto"]) == 0 {
		vals[2] = proto
		h["X-Forwarded-Proto"] = vals[2:3:3]
	}
	elem := forwardedElement(peer, peerStr, in.Host, proto)
	if prior := h["Forwarded"]; len(prior) > 0 {
		vals[3] = strings.Join(prior, ", ") + ", " + elem
	} else {
		vals[3] = elem
	}
	h["Forwarded"] = vals[3:4:4]
	if p.Via != "" {
		addVia(h, in.ProtoMajor, in.ProtoMinor, p.Via)
	}
}

// dashedName returns a header name as CGI-style upstreams (PHP, WSGI)
// read it, where an underscore counts as a dash, in canonical form:
// X_User and x-user are X-User. It allocates only for a name that is not
// already canonical.
func dashedName(k string) string {
	if strings.IndexByte(k, '_') >= 0 {
		k = strings.ReplaceAll(k, "_", "-")
	}
	return textproto.CanonicalMIMEHeaderKey(k)
}

// stripHeaders is the one place where header fields a client may not
// choose are removed. It deletes every field of h for which owned reports
// true; owned gets the field's name as an upstream reads it (dashedName)
// and whether the client spelled it otherwise (X_Forwarded_For,
// x-forwarded-for), so that no spelling of a name slips through.
func stripHeaders(h http.Header, owned func(name string, respelled bool) bool) {
	for k := range h {
		if name := dashedName(k); owned(name, name != k) {
			delete(h, k)
		}
	}
}

// headerNames is a set of header names that belong to the proxy or to one
// of its hooks: exact names, and prefixes for entries ending in "*"
// ("X-Sluice-*"). It holds them in canonical form and matches the names
// dashedName returns, so every spelling is covered.
type headerNames struct {
	exact    []string
	prefixes []string
}

func newHeaderNames(names ...string) headerNames {
	var n headerNames
	for _, name := range names {
		if p, ok := strings.CutSuffix(name, "*"); ok {
			n.prefixes = append(n.prefixes, dashedName(p))
			continue
		}
		n.exact = append(n.exact, dashedName(name))
	}
	return n
}

// matches reports whether name, as dashedName returns it, is in n.
func (n *headerNames) matches(name string) bool {
	for _, e := range n.exact {
		if name == e {
			return true
		}
	}
	for _, p := range n.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// strip deletes the fields of h that n matches, in any spelling.
func (n *headerNames) strip(h http.Header) {
	if len(n.exact) == 0 && len(n.prefixes) == 0 {
		return
	}
	stripHeaders(h, func(name string, _ bool) bool { return n.matches(name) })
}

// dropForged deletes the client-identity headers a client may not choose,
// in one pass over h: every X-Forwarded-* field, Forwarded and X-Real-Ip
// from an untrusted peer; their other spellings (X_Forwarded_For) from
// any peer; Proxy.IdentityHeaders and the target overrides
// (isTargetOverride) in any spelling.
func (p *Proxy) dropForged(h http.Header, trusted bool) {
	stripHeaders(h, func(name string, respelled bool) bool {
		return isForwardingName(name) && (!trusted || respelled) || p.identity.matches(name) || isTargetOverride(name)
	})
}

// isTargetOverride reports whether a (dashedName) header name is one
// that some frameworks read as the request's path instead of the request
// line's: Yii and Zend take X-Rewrite-Url and X-Original-Url from IIS
// rewrite modules. A request for "/public" carrying "X-Rewrite-Url:
// /admin" would be served as "/admin" past the routes: they are dropped
// from every request, trusted peer or not (a load balancer passes them
// on, it does not set them); only hooks may set them.
func isTargetOverride(k string) bool {
	return k == "X-Original-Url" || k == "X-Rewrite-Url" || k == "X-Original-Uri"
}

func isForwardingName(k string) bool {
	return strings.HasPrefix(k, "X-Forwarded-") || k == "Forwarded" || k == "X-Real-Ip"
}

// forwardedElement formats one RFC 7239 forwarded-element; peerStr is
// peer.String() (or "unknown"), passed to save formatting it twice.
func forwardedElement(peer netip.Addr, peerStr, host, proto string) string {
	buf := make([]byte, 0, 64)
	buf = append(buf, "for="...)
	if peer.Is6() {
		buf = append(buf, `"[`...)
		buf = append(buf, peerStr...)
		buf = append(buf, `]"`...)
	} else {
		buf = append(buf, peerStr...)
	}
	if host != "" {
		buf = append(buf, ";host="...)
		buf = appendForwardedValue(buf, host)
	}
	buf = append(buf, ";proto="...)
	buf = append(buf, proto...)
	return string(buf)
}

// appendForwardedValue appends v as an RFC 7239 value: a token if it is
// one, a quoted-string otherwise.
func appendForwardedValue(buf []byte, v string) []byte {
	token := v != ""
	for i := 0; i < len(v); i++ {
		if !httpguts.IsTokenRune(rune(v[i])) {
			token = false
			break
		}
	}
	if token {
		return append(buf, v...)
	}
	buf = append(buf, '"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			buf = append(buf, '\\')
		}
		buf = append(buf, v[i])
	}
	return append(buf, '"')
}

// addVia appends this proxy to the Via header (RFC 9110 §7.6.3).
func addVia(h http.Header, major, minor int, name string) {
	v := viaProto(major, minor) + " " + name
	if prior := h["Via"]; len(prior) > 0 {
		h["Via"] = []string{strings.Join(prior, ", ") + ", " + v}
	} else {
		h["Via"] = []string{v}
	}
}

func viaProto(major, minor int) string {
	switch {
	case major == 1 && minor == 0:
		return "1.0"
	case major == 2:
		return "2"
	case major == 3:
		return "3"
	}
	return "1.1"
}

// mergeHeader adds every value of src to dst.
func mergeHeader(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append(dst[k], vv...)
	}
}

// copyHeader copies src into dst, replacing the values of keys present in
// both. The value slices are copied so that dst can be edited safely.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append([]string(nil), vv...)
	}
}

// checkRequest refuses inbound requests that a proxy must not forward even
// though net/http accepted them. net/http already refuses duplicate Host
// headers, conflicting Content-Length values, transfer codings other than
// a single "chunked", and invalid header names and values; what it cannot
// know is what a proxy must not pass on.
func checkRequest(r *http.Request) error {
	if r.ProtoMajor != 1 && r.ProtoMajor != 2 {
		return &Error{Status: http.StatusHTTPVersionNotSupported, Err: errBadRequest("unsupported protocol version")}
	}
	if len(r.TransferEncoding) > 0 && (r.ProtoMajor == 1 && r.ProtoMinor == 0) {
		return &Error{Status: http.StatusBadRequest, Err: errBadRequest("Transfer-Encoding in an HTTP/1.0 request")}
	}
	if hasLower(r.Method) {
		// Methods are case-sensitive (RFC 9110 §9.1), but Django, Flask,
		// Symfony and Laravel upper-case them: "delete" would be DELETE
		// to the upstream and no "DELETE /x" route would have seen it.
		// nginx refuses them too.
		return &Error{Status: http.StatusBadRequest, Err: errBadRequest("method in lower case")}
	}
	if r.Method == http.MethodConnect {
		switch {
		case r.ProtoMajor != 1:
			return &Error{Status: http.StatusMethodNotAllowed, Err: errBadRequest("CONNECT over HTTP/2 is not supported")}
		case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
			// A CONNECT's content has no meaning (RFC 9110 §9.3.6); bytes
			// after its head belong to the tunnel.
			return &Error{Status: http.StatusBadRequest, Err: errBadRequest("CONNECT with a body")}
		}
	}
	if r.RequestURI == "*" {
		// OPTIONS * asks about the server, not a resource: no route can
		// match it, so route Authorizers would never see it, and a
		// Director joining a target path would turn it into a path
		// ("/base/*") that no route was matched on. It is not forwarded.
		return &Error{Status: http.StatusBadRequest, Err: errBadRequest("asterisk-form request target")}
	}
	for _, v := range r.Header["Content-Length"] {
		if v == "" || strings.TrimLeft(v, "0123456789") != "" {
			return &Error{Status: http.StatusBadRequest, Err: errBadRequest("invalid Content-Length")}
		}
	}
	return nil
}

// hasLower reports whether s has a lower case ASCII letter.
func hasLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			return true
		}
	}
	return false
}

type errBadRequest string

func (e errBadRequest) Error() string { return "sluice: bad request: " + string(e) }
