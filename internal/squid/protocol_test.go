package squid

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		line     string
		channels bool
		want     Reply
		wantErr  bool
	}{
		{"OK", false, Reply{Result: OK}, false},
		{"ERR", false, Reply{Result: ERR}, false},
		{"BH message=\"helper broke\"", false, Reply{Result: BH, Pairs: []Pair{{"message", "helper broke"}}}, false},
		{"0 OK", true, Reply{Result: OK}, false},
		{"17 OK rewrite-url=http://example.com/x?a=b", true,
			Reply{Channel: 17, Result: OK, Pairs: []Pair{{"rewrite-url", "http://example.com/x?a=b"}}}, false},
		{"3 OK status=302 url=\"http://example.com/blocked?u=a b\"\r", true,
			Reply{Channel: 3, Result: OK, Pairs: []Pair{{"status", "302"}, {"url", "http://example.com/blocked?u=a b"}}}, false},
		{`1 ERR message="say \"no\"\\" log=x`, true,
			Reply{Channel: 1, Result: ERR, Pairs: []Pair{{"message", `say "no"\`}, {"log", "x"}}}, false},
		{"2   OK\t  tag=a  ", true, Reply{Channel: 2, Result: OK, Pairs: []Pair{{"tag", "a"}}}, false},
		{"", false, Reply{}, true},
		{"OK", true, Reply{}, true},
		{"x OK", true, Reply{}, true},
		{"-1 OK", true, Reply{}, true},
		{"1 MAYBE", true, Reply{Channel: 1}, true},
		{"http://legacy.example/", false, Reply{}, true},
		{"OK garbage", false, Reply{Result: OK}, true},
		{"OK =x", false, Reply{Result: OK}, true},
		{`OK a="unterminated`, false, Reply{Result: OK}, true},
		{`OK a="x"y`, false, Reply{Result: OK}, true},
		{`OK a=x"y`, false, Reply{Result: OK}, true},
		{`OK a="x\`, false, Reply{Result: OK}, true},
	}
	for _, tt := range tests {
		got, err := ParseReply(tt.line, tt.channels)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseReply(%q, %v) err = %v, want error %v", tt.line, tt.channels, err, tt.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("ParseReply(%q) err = %v, not ErrSyntax", tt.line, err)
			}
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseReply(%q) (-want +got):\n%s", tt.line, diff)
		}
	}
}

func TestAppendRequest(t *testing.T) {
	tests := []struct {
		channel  uint64
		channels bool
		fields   []string
		want     string
		wantErr  bool
	}{
		{5, true, []string{"http://a/", "127.0.0.1/-", "-", "GET"}, "5 http://a/ 127.0.0.1/- - GET\n", false},
		{0, false, []string{"http://a/", "GET"}, "http://a/ GET\n", false},
		{0, false, []string{"http://a/ b"}, "", true},
		{0, false, []string{"http://a/\nOK"}, "", true},
		{0, false, []string{""}, "", true},
	}
	for _, tt := range tests {
		got, err := AppendRequest(nil, tt.channel, tt.channels, tt.fields...)
		if (err != nil) != tt.wantErr {
			t.Errorf("AppendRequest(%q) err = %v", tt.fields, err)
			continue
		}
		if err == nil && string(got) != tt.want {
			t.Errorf("AppendRequest(%q) = %q, want %q", tt.fields, got, tt.want)
		}
	}
}

// FuzzParseReply checks that any line parses or fails with ErrSyntax,
// and that a parsed reply survives a round trip through its formatting.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"OK", "0 OK rewrite-url=http://x/", `1 OK status=302 url="http://x/?a b"`,
		`2 ERR message="no \"way\""`, "BH", "3 BH message=broken", "garbage", "4 OK a=b c=\"d\\\\\""} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, line string, channels bool) {
		r, err := ParseReply(line, channels)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error not ErrSyntax: %v", err)
			}
			return
		}
		if len(r.Pairs) > MaxPairs {
			t.Fatalf("%d pairs", len(r.Pairs))
		}
		// Format it back with every value quoted, and parse again.
		s := ""
		if channels {
			s = "9 "
		}
		s += r.Result.String()
		for _, p := range r.Pairs {
			s += " " + p.Key + "=" + quote(p.Value)
		}
		r2, err := ParseReply(s, channels)
		if err != nil {
			t.Fatalf("reformatted %q: %v", s, err)
		}
		if diff := cmp.Diff(r.Pairs, r2.Pairs); diff != "" || r.Result != r2.Result {
			t.Fatalf("round trip of %q via %q (-first +second):\n%s", line, s, diff)
		}
	})
}

func quote(v string) string {
	b := []byte{'"'}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}
