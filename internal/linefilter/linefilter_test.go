package linefilter

import (
	"bytes"
	"errors"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var digits = regexp.MustCompile(`[0-9]{4,}`)

func redact(line []byte) []byte { return digits.ReplaceAll(line, []byte("XXXX")) }

// feed runs in through a Splitter cut into chunks of size n.
func feed(t testing.TB, s *Splitter, in []byte, n int) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	for len(in) > n {
		if err := s.Feed(&out, in[:n], false); err != nil {
			return out.Bytes(), err
		}
		in = in[n:]
	}
	err := s.Feed(&out, in, true)
	return out.Bytes(), err
}

func TestSplitter(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"one line", "card 12345678\n", "card XXXX\n"},
		{"no final newline", "a 1234\nb 99999", "a XXXX\nb XXXX"},
		{"crlf kept", "x 12345\r\ny\r\n", "x XXXX\r\ny\r\n"},
		{"sse", "data: {\"card\":\"4111111111111111\"}\n\n", "data: {\"card\":\"XXXX\"}\n\n"},
		{"untouched", "nothing here\n", "nothing here\n"},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 2, 3, 7, 1 << 10} {
			s := &Splitter{Func: redact, Max: 64}
			got, err := feed(t, s, []byte(tt.in), n)
			if err != nil {
				t.Fatalf("%s/chunk %d: %v", tt.name, n, err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("%s/chunk %d: (-want +got)\n%s", tt.name, n, diff)
			}
		}
	}
}

func TestSplitterLineTooLong(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 100)
	for _, in := range [][]byte{long, append(long, '\n'), append([]byte("ok\n"), long...)} {
		for _, n := range []int{1, 10, 1000} {
			s := &Splitter{Func: redact, Max: 50}
			if _, err := feed(t, s, in, n); !errors.Is(err, ErrLineTooLong) {
				t.Errorf("len %d chunk %d: err = %v, want ErrLineTooLong", len(in), n, err)
			}
		}
	}
}

// TestSplitterMemory checks that the Splitter holds at most one line.
func TestSplitterMemory(t *testing.T) {
	s := &Splitter{Func: redact, Max: 100}
	line := []byte("0123456789 abc\n")
	var out bytes.Buffer
	for i := 0; i < 10000; i++ {
		if err := s.Feed(&out, line[:5], false); err != nil {
			t.Fatal(err)
		}
		if err := s.Feed(&out, line[5:], false); err != nil {
			t.Fatal(err)
		}
		if cap(s.partial) > 2*s.Max {
			t.Fatalf("partial buffer grew to %d", cap(s.partial))
		}
		out.Reset()
	}
}

func FuzzSplitter(f *testing.F) {
	f.Add([]byte("a 12345\nb\r\nc 000000"), 3)
	f.Add([]byte("\n\n\r\n"), 1)
	f.Fuzz(func(t *testing.T, in []byte, n int) {
		if n <= 0 || n > 1<<16 {
			n = 1 + len(in)
		}
		id := func(l []byte) []byte { return l }
		s := &Splitter{Func: id, Max: len(in) + 1}
		got, err := feed(t, s, in, n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, in) {
			t.Fatalf("identity filter changed the stream:\n in %q\nout %q", in, got)
		}
		s = &Splitter{Func: redact, Max: len(in) + 1}
		whole, err := feed(t, s, in, len(in)+1)
		if err != nil {
			t.Fatal(err)
		}
		s = &Splitter{Func: redact, Max: len(in) + 1}
		cut, err := feed(t, s, in, n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(whole, cut) {
			t.Fatalf("output depends on chunking: %q vs %q", whole, cut)
		}
	})
}
