package wsframe

import (
	"strings"

	"github.com/gobwas/httphead"
)

// ParseExtensions parses the values of Sec-WebSocket-Extensions header
// fields (RFC 6455 §9.1) into one list of extensions, in order, with
// github.com/gobwas/httphead: names and parameter names are tokens,
// parameter values tokens or quoted strings (returned unquoted), and
// empty list elements are skipped (RFC 9110 §5.6.1). It reports false if
// a value is malformed.
func ParseExtensions(vv []string) ([]httphead.Option, bool) {
	var opts []httphead.Option
	for _, v := range vv {
		if strings.Trim(v, " \t,") == "" {
			continue
		}
		var ok bool
		if opts, ok = httphead.ParseOptions([]byte(v), opts); !ok || adjacentWords(v) {
			return nil, false
		}
	}
	return opts, true
}

// adjacentWords reports whether v has two tokens or quoted strings in a
// row, which the grammar never allows and httphead.ParseOptions reads
// leniently ("a b" as "b"; "a; p=1 b" as an extension "b").
func adjacentWords(v string) bool {
	sc := httphead.NewScanner([]byte(v))
	prev := httphead.ItemUndef
	for sc.Next() {
		t := sc.Type()
		word := t == httphead.ItemToken || t == httphead.ItemString
		if word && (prev == httphead.ItemToken || prev == httphead.ItemString) {
			return true
		}
		prev = t
	}
	return false
}
