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
// a value is malformed. httphead is lenient in one way: of two tokens
// separated only by whitespace ("a b") it keeps the last.
func ParseExtensions(vv []string) ([]httphead.Option, bool) {
	var opts []httphead.Option
	for _, v := range vv {
		if strings.Trim(v, " \t,") == "" {
			continue
		}
		var ok bool
		if opts, ok = httphead.ParseOptions([]byte(v), opts); !ok {
			return nil, false
		}
	}
	return opts, true
}
