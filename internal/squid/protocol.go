// Package squid speaks the line protocol of Squid's external helpers
// (url_rewrite_program, store_id_program, external_acl_type) and runs a
// supervised pool of helper processes.
//
// A request is one line on the helper's stdin: with concurrency enabled,
// a channel ID, then space-separated fields (for url_rewrite_program,
// "URL client/fqdn user method kv-pairs"). The answer is one line on its
// stdout: the same channel ID, a result (OK, ERR or BH) and optional
// key=value pairs, values optionally quoted. See
// https://wiki.squid-cache.org/Features/AddonHelpers.
package squid

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Result is the outcome word of a helper reply.
type Result int

// The results a helper may answer.
const (
	// OK: success; for url_rewrite, with optional rewrite-url= or
	// status= and url= for a redirect.
	OK Result = iota + 1
	// ERR: the helper's answer is no (for an ACL helper: deny).
	ERR
	// BH: "broken helper", the helper could not decide.
	BH
)

// String returns the result keyword as the protocol writes it.
func (r Result) String() string {
	switch r {
	case OK:
		return "OK"
	case ERR:
		return "ERR"
	case BH:
		return "BH"
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}

// Pair is one key=value of a reply.
type Pair struct{ Key, Value string }

// Reply is a parsed helper reply line.
type Reply struct {
	// Channel is the channel ID, when the helper runs with concurrency.
	Channel uint64
	Result  Result
	// Pairs are the key=value pairs in the order the helper wrote them.
	Pairs []Pair
}

// Get returns the value of the first pair named key.
func (r *Reply) Get(key string) (string, bool) {
	for _, p := range r.Pairs {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// ErrSyntax is wrapped by the errors of ParseReply.
var ErrSyntax = errors.New("squid: malformed helper reply")

// MaxPairs bounds the key=value pairs of one reply.
const MaxPairs = 64

// ParseReply parses one reply line (without its newline; a trailing CR is
// ignored). With channels set, the line must start with a channel ID.
func ParseReply(line string, channels bool) (Reply, error) {
	var r Reply
	line = strings.TrimSuffix(line, "\r")
	rest := line
	if channels {
		var tok string
		tok, rest = nextToken(rest)
		ch, err := strconv.ParseUint(tok, 10, 64)
		if err != nil {
			return r, fmt.Errorf("%w: bad channel ID %q", ErrSyntax, clip(tok))
		}
		r.Channel = ch
	}
	var word string
	word, rest = nextToken(rest)
	switch word {
	case "OK":
		r.Result = OK
	case "ERR":
		r.Result = ERR
	case "BH":
		r.Result = BH
	default:
		return r, fmt.Errorf("%w: result %q is not OK, ERR or BH", ErrSyntax, clip(word))
	}
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			return r, nil
		}
		if len(r.Pairs) == MaxPairs {
			return r, fmt.Errorf("%w: more than %d pairs", ErrSyntax, MaxPairs)
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || !validKey(rest[:eq]) {
			return r, fmt.Errorf("%w: expected key=value at %q", ErrSyntax, clip(rest))
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			var err error
			val, rest, err = unquote(rest)
			if err != nil {
				return r, err
			}
			if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
				return r, fmt.Errorf("%w: junk after quoted value of %s", ErrSyntax, key)
			}
		} else {
			val, rest = nextToken(rest)
			if strings.ContainsRune(val, '"') {
				return r, fmt.Errorf("%w: stray quote in value of %s", ErrSyntax, key)
			}
		}
		r.Pairs = append(r.Pairs, Pair{Key: key, Value: val})
	}
}

func nextToken(s string) (tok, rest string) {
	s = strings.TrimLeft(s, " \t")
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// unquote reads a "quoted value" with \" and \\ escapes (and the C escapes
// \n, \r, \t that Squid's helpers use) from the start of s.
func unquote(s string) (val, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			i++
			if i == len(s) {
				return "", "", fmt.Errorf("%w: unterminated escape", ErrSyntax)
			}
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("%w: unterminated quoted value", ErrSyntax)
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// ErrBadField is returned by AppendRequest for a field that would break
// the line protocol.
var ErrBadField = errors.New("squid: request field contains whitespace or control characters")

// AppendRequest appends a request line for fields to buf: the channel ID
// first when channels is set, the fields separated by spaces, and a
// newline. A field must be non-empty and free of spaces and control
// characters (use "-" for an unknown value, as Squid does).
func AppendRequest(buf []byte, channel uint64, channels bool, fields ...string) ([]byte, error) {
	if channels {
		buf = strconv.AppendUint(buf, channel, 10)
	}
	for i, f := range fields {
		if f == "" {
			return buf, fmt.Errorf("%w: field %d is empty", ErrBadField, i)
		}
		for j := 0; j < len(f); j++ {
			if f[j] <= ' ' || f[j] == 0x7f {
				return buf, fmt.Errorf("%w: field %d", ErrBadField, i)
			}
		}
		if channels || i > 0 {
			buf = append(buf, ' ')
		}
		buf = append(buf, f...)
	}
	return append(buf, '\n'), nil
}
