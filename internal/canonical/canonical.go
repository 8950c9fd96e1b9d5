// Package canonical computes the one canonical spelling of a request
// target that every decision of the proxy is made on and that the
// upstream receives: the path of RFC 3986 §6.2.2 syntax-based
// normalization (percent-encoding case, unreserved characters decoded,
// dot segments removed) with merged slashes, and the authority lowercased,
// IDNA-encoded, without trailing dot or default port.
//
// What cannot be made canonical without changing the target's meaning is
// refused with an error: an encoded slash (unless kept opaque), a
// backslash in any spelling, an encoded NUL, a ".." above the root.
package canonical

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Errors returned for targets that have no canonical form.
var (
	ErrEncodedSlash = errors.New("encoded slash (%2F) in path")
	ErrBackslash    = errors.New("backslash in path")
	ErrEncodedNUL   = errors.New("encoded NUL (%00) in path")
	ErrAboveRoot    = errors.New("dot segment above the root")
	ErrBadEscape    = errors.New("invalid percent-encoding in path")
	ErrControl      = errors.New("control character in path")
	ErrNotAbsolute  = errors.New("path does not start with /")
	ErrBadHost      = errors.New("invalid host")
)

// Path returns the canonical form of escaped, a request path in its
// percent-encoded form (url.URL.EscapedPath), as an escaped path again:
//
//   - percent-encodings of unreserved characters (ALPHA, DIGIT, "-", ".",
//     "_", "~") are decoded and the others written in upper case
//     (RFC 3986 §6.2.2.1, §6.2.2.2);
//   - bytes that may not appear literally in a path segment are
//     percent-encoded;
//   - runs of "/" are merged into one;
//   - "." and ".." segments are removed (RFC 3986 §5.2.4), with the
//     trailing slash that a final dot segment implies.
//
// An encoded slash is refused unless keepEncodedSlash is set, in which
// case "%2F" stays inside its segment, opaque. A backslash, literal or
// encoded, an encoded NUL, a ".." that would climb above the root and a
// malformed percent-encoding are refused. The query is not part of the
// path: the caller never rewrites it.
//
// Path allocates only when escaped is not already canonical.
func Path(escaped string, keepEncodedSlash bool) (string, error) {
	if escaped == "" || escaped[0] != '/' {
		return "", ErrNotAbsolute
	}
	if isCanonical(escaped) {
		return escaped, nil
	}
	// Pass 1: one spelling per byte, into segments split on literal '/'.
	var b strings.Builder
	b.Grow(len(escaped) + 8)
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c == '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", ErrBadEscape
			}
			v := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			i += 2
			switch {
			case v == 0:
				return "", ErrEncodedNUL
			case v == '\\':
				return "", ErrBackslash
			case v == '/' && !keepEncodedSlash:
				return "", ErrEncodedSlash
			case isUnreserved(v):
				b.WriteByte(v)
			default:
				writeEscaped(&b, v)
			}
		case c == '\\':
			return "", ErrBackslash
		case c < ' ' || c == 0x7f:
			return "", ErrControl
		case c == '/' || isPchar(c):
			b.WriteByte(c)
		default:
			writeEscaped(&b, c)
		}
	}
	return removeDots(b.String())
}

// removeDots merges slashes and removes dot segments of a path whose bytes
// are already canonical (RFC 3986 §5.2.4, on segments split on "/"). The
// result ends in "/" when the last segment was empty or a dot segment.
func removeDots(p string) (string, error) {
	segs := make([]string, 0, strings.Count(p, "/"))
	trailing := false
	for rest := p[1:]; ; {
		seg, next, more := strings.Cut(rest, "/")
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return "", ErrAboveRoot
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
		if !more {
			trailing = seg == "" || seg == "." || seg == ".."
			break
		}
		rest = next
	}
	n := 1
	for _, s := range segs {
		n += len(s) + 1
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if len(segs) == 0 || trailing {
		b.WriteByte('/')
	}
	return b.String(), nil
}

// isCanonical reports, without allocating, whether p needs no change:
// no percent sign, no backslash, only path characters, no empty segment
// except a final one, no dot segment.
func isCanonical(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '/' {
			if i+1 < len(p) && p[i+1] == '/' {
				return false
			}
			if i+1 < len(p) && p[i+1] == '.' {
				j := i + 2
				if j < len(p) && p[j] == '.' {
					j++
				}
				if j == len(p) || p[j] == '/' {
					return false
				}
			}
			continue
		}
		if c == '%' || !isPchar(c) {
			return false
		}
	}
	return true
}

// HasParams reports whether an escaped path has a ";" path parameter in
// any segment, the syntax that some servers (Java's among them) cut off
// before routing: "/admin;x/users" is "/admin/users" to them.
func HasParams(escaped string) bool { return strings.IndexByte(escaped, ';') >= 0 }

// StripParams returns an escaped path with the ";..." parameter of every
// segment removed, as a server that ignores path parameters reads it.
func StripParams(escaped string) string {
	if !HasParams(escaped) {
		return escaped
	}
	var b strings.Builder
	skip := false
	for i := 0; i < len(escaped); i++ {
		switch c := escaped[i]; {
		case c == '/':
			skip = false
			b.WriteByte(c)
		case c == ';':
			skip = true
		case !skip:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Host returns the canonical form of a request's authority (host and
// optional port, as in the Host header): the name lowercased, IDNA
// encoded (UTS #46, as a browser would look it up), its trailing dot
// dropped, refused if its last label is a number (see endsInNumber); an IP literal in its one textual form (RFC 5952 for IPv6, in
// brackets); the port kept unless it is the default port of scheme
// ("http" 80, "https" 443), which is dropped. An empty host stays empty.
func Host(hostport, scheme string) (string, error) {
	if hostport == "" {
		return "", nil
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return "", err
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || !allDigits(port) {
			return "", ErrBadHost
		}
		port = strconv.FormatUint(n, 10)
		if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
			port = ""
		}
	}
	var name string
	if strings.HasPrefix(host, "[") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", ErrBadHost
		}
		name = "[" + a.String() + "]"
	} else if a, err := parseAddr(host); err == nil {
		if !a.Is4() {
			return "", ErrBadHost // an IPv6 literal needs brackets
		}
		name = a.String()
	} else {
		name, err = hostName(host)
		if err != nil {
			return "", err
		}
	}
	if port != "" {
		return name + ":" + port, nil
	}
	return name, nil
}

// errNotAddr is parseAddr's answer for a host that is no address literal.
var errNotAddr = errors.New("canonical: not an IP address")

// parseAddr is netip.ParseAddr, without its cost for a registered name:
// an address literal has only hex digits, dots, colons and a zone's
// percent sign, and netip.ParseAddr allocates the error it returns for
// anything else (twice per request, on the hot path).
func parseAddr(host string) (netip.Addr, error) {
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F', c == '.', c == ':', c == '%':
		default:
			return netip.Addr{}, errNotAddr
		}
	}
	return netip.ParseAddr(host)
}

var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(false), // underscores appear in real host names
)

// hostName canonicalizes a registered name.
func hostName(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	if h == "" || h[0] == '.' || strings.HasSuffix(h, ".") || strings.Contains(h, "..") {
		return "", ErrBadHost // an empty label
	}
	ascii := true
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 0x80 {
			ascii = false
			continue
		}
		if !isHostChar(c) {
			return "", ErrBadHost
		}
	}
	if ascii && !strings.Contains(h, "xn--") && !strings.Contains(h, "XN--") {
		if endsInNumber(h) {
			return "", ErrBadHost
		}
		return strings.ToLower(h), nil
	}
	if !utf8.ValidString(h) {
		return "", ErrBadHost
	}
	a, err := idnaProfile.ToASCII(h)
	if err != nil || a == "" {
		return "", ErrBadHost
	}
	if again, err := idnaProfile.ToASCII(a); err != nil || again != a {
		return "", ErrBadHost // not a fixed point: no one spelling
	}
	for i := 0; i < len(a); i++ {
		if !isHostChar(a[i]) {
			return "", ErrBadHost
		}
	}
	if endsInNumber(a) {
		return "", ErrBadHost
	}
	return strings.ToLower(a), nil
}

// endsInNumber reports whether a host name's last label is a number:
// decimal digits, or hexadecimal after "0x" (the WHATWG URL Standard's
// "ends in a number"). Browsers read such a name as an IPv4 address in a
// spelling of its own, and so do resolvers built on inet_aton (glibc's
// getaddrinfo, Go's cgo resolver): "2130706433", "127.1", "0x7f.1" and
// "0177.0.0.1" all reach 127.0.0.1, while a decision made on the name
// would not know it. Such names are refused, not read as names; the
// dotted-decimal spelling of an address is an IP literal, not a name.
func endsInNumber(h string) bool {
	last := h[strings.LastIndexByte(h, '.')+1:]
	if allDigits(last) {
		return true
	}
	if len(last) < 2 || last[0] != '0' || last[1] != 'x' && last[1] != 'X' {
		return false
	}
	for i := 2; i < len(last); i++ {
		if !isHex(last[i]) {
			return false
		}
	}
	return true
}

// splitHostPort splits an authority without the surprises of
// net.SplitHostPort (which wants a port).
func splitHostPort(hp string) (host, port string, err error) {
	if strings.HasPrefix(hp, "[") {
		i := strings.IndexByte(hp, ']')
		if i < 0 {
			return "", "", ErrBadHost
		}
		host, rest := hp[:i+1], hp[i+1:]
		if rest == "" {
			return host, "", nil
		}
		if rest[0] != ':' || len(rest) == 1 {
			return "", "", ErrBadHost
		}
		return host, rest[1:], nil
	}
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return hp, "", nil
	}
	if strings.IndexByte(hp[:i], ':') >= 0 {
		return "", "", ErrBadHost // an IPv6 literal without brackets
	}
	if i == len(hp)-1 {
		return hp[:i], "", nil // "host:" means the default port (RFC 3986 §6.2.3)
	}
	return hp[:i], hp[i+1:], nil
}

// isHostChar reports whether c may appear in a registered name (RFC 3986
// §3.2.2 reg-name: unreserved and sub-delims; percent-encoding is not
// accepted here).
func isHostChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte("!$&'()*+,;=", c) >= 0
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isUnreserved reports whether c is an RFC 3986 §2.3 unreserved character.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isPchar reports whether c may appear literally in a path segment
// (RFC 3986 §3.3 pchar, without pct-encoded).
func isPchar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte("!$&'()*+,;=:@", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func writeEscaped(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&15])
}
