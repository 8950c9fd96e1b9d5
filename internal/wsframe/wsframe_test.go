package wsframe

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/gobwas/ws"
	"github.com/google/go-cmp/cmp"
)

func encode(fin bool, rsv byte, op ws.OpCode, masked bool, p []byte) []byte {
	var b bytes.Buffer
	if err := WriteFrame(&b, make([]byte, 64), op, rsv, masked, p); err != nil {
		panic(err)
	}
	out := b.Bytes()
	if !fin {
		out[0] &^= 0x80
	}
	return out
}

func TestWriteFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 1000, 65535, 65536, 70000} {
		for _, masked := range []bool{false, true} {
			p := bytes.Repeat([]byte{'a', 'b', 'c'}, n/3+1)[:n]
			orig := append([]byte(nil), p...)
			wire := encode(true, 0, ws.OpBinary, masked, p)
			if !bytes.Equal(p, orig) {
				t.Fatalf("WriteFrame modified its payload")
			}
			f, err := ws.ReadFrame(bytes.NewReader(wire))
			if err != nil {
				t.Fatal(err)
			}
			if f.Header.Masked != masked || f.Header.Length != int64(n) {
				t.Fatalf("n=%d masked=%v: header %+v", n, masked, f.Header)
			}
			if masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
			if !bytes.Equal(f.Payload, p) {
				t.Fatalf("n=%d masked=%v: payload differs", n, masked)
			}
		}
	}
}

func TestTrackerSplitHeaders(t *testing.T) {
	stream := append(encode(true, 0, ws.OpText, true, make([]byte, 300)), encode(true, 0, ws.OpClose, true, []byte{3, 232})...)
	for split := 1; split < len(stream); split++ {
		var tr Tracker
		tr.Advance(stream[:split])
		sawClose := tr.Advance(stream[split:])
		if !tr.AtBoundary() {
			t.Fatalf("split %d: not at boundary at the end", split)
		}
		if split <= 306 && !sawClose { // the close header completes in the second part
			t.Fatalf("split %d: close not seen", split)
		}
	}
}

func TestReaderMessages(t *testing.T) {
	var in bytes.Buffer
	in.Write(encode(false, 0, ws.OpText, true, []byte("a")))
	in.Write(encode(true, 0, ws.OpPing, true, []byte("p")))
	in.Write(encode(true, 0, ws.OpContinuation, true, []byte("b")))
	in.Write(encode(true, 0, ws.OpClose, true, CloseBody(1000, "ok")))
	r := &Reader{Src: bufio.NewReader(&in), Masked: true, MaxMessage: 10}
	type ev struct {
		Op   ws.OpCode
		Data string
		Code ws.StatusCode
	}
	var got []ev
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev{e.OpCode, string(e.Payload), e.CloseCode})
	}
	want := []ev{{ws.OpPing, "p", 0}, {ws.OpText, "ab", 0}, {ws.OpClose, "\x03\xe8ok", 1000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// FuzzReader feeds arbitrary bytes to the validating reader: it must never
// panic, never return a message over the limit, and never allocate much
// more than the bytes it was given (a header claiming 2^62 bytes must not
// make it allocate them).
func FuzzReader(f *testing.F) {
	f.Add(encode(true, 0, ws.OpText, true, []byte("hello")), true)
	f.Add(encode(true, 0, ws.OpText, false, []byte("hello")), false)
	f.Add(append(encode(false, 0, ws.OpBinary, true, []byte("ab")), encode(true, 0, ws.OpContinuation, true, []byte("cd"))...), true)
	f.Add(encode(true, 0, ws.OpClose, true, CloseBody(1001, "bye")), true)
	f.Add([]byte{0x82, 0xff, 0x3f, 0, 0, 0, 0, 0, 0, 0}, false)
	f.Add(encode(true, 4, ws.OpText, true, []byte("x")), true)
	f.Fuzz(func(t *testing.T, data []byte, masked bool) {
		const max = 1 << 12
		r := &Reader{Src: bufio.NewReaderSize(bytes.NewReader(data), 16), Masked: masked, MaxMessage: max, Deflate: len(data)%2 == 0}
		for i := 0; i < 1000; i++ {
			e, err := r.Next()
			if err != nil {
				var fe *Error
				if errors.As(err, &fe) && !SendableCode(fe.Code) {
					t.Fatalf("unsendable close code %d", fe.Code)
				}
				return
			}
			if len(e.Payload) > max {
				t.Fatalf("message of %d bytes over the limit", len(e.Payload))
			}
			if e.OpCode.IsControl() && len(e.Payload) > 125 {
				t.Fatalf("control payload of %d bytes", len(e.Payload))
			}
			if cap(r.msg) > 2*len(data)+64 && cap(r.msg) > 64<<10 {
				t.Fatalf("buffer of %d bytes for %d input bytes", cap(r.msg), len(data))
			}
		}
	})
}

// FuzzTracker checks the boundary tracker against a sequential parse of
// the same stream, whatever the chunking.
func FuzzTracker(f *testing.F) {
	f.Add(encode(true, 0, ws.OpText, true, []byte("hello")), uint8(3))
	f.Add(append(encode(true, 0, ws.OpBinary, false, make([]byte, 200)), 0x81), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		var tr Tracker
		step := int(chunk%32) + 1
		for off := 0; off < len(data); off += step {
			tr.Advance(data[off:min(off+step, len(data))])
		}
		// Sequential parse.
		br := bufio.NewReader(bytes.NewReader(data))
		boundary, valid := true, true
		for {
			h, err := ReadHeader(br)
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, ErrLengthMSB) {
				valid = false
				break
			}
			if err != nil {
				boundary = false
				break
			}
			n, _ := io.CopyN(io.Discard, br, h.Length)
			if n < h.Length {
				boundary = false
				break
			}
		}
		if valid && tr.AtBoundary() != boundary {
			t.Fatalf("tracker boundary %v, parse says %v", tr.AtBoundary(), boundary)
		}
		if !valid && tr.Valid() {
			t.Fatalf("tracker followed an invalid stream")
		}
	})
}

func TestParseExtensions(t *testing.T) {
	type ext struct {
		Name   string
		Params map[string]string
	}
	tests := []struct {
		in   []string
		want []ext
		ok   bool
	}{
		{nil, nil, true},
		{[]string{"", " , "}, nil, true},
		{[]string{"permessage-deflate"}, []ext{{"permessage-deflate", map[string]string{}}}, true},
		{[]string{`permessage-deflate ; client_max_window_bits="10"; server_no_context_takeover`},
			[]ext{{"permessage-deflate", map[string]string{"client_max_window_bits": "10", "server_no_context_takeover": ""}}}, true},
		{[]string{"foo, bar; x=1", "baz"},
			[]ext{{"foo", map[string]string{}}, {"bar", map[string]string{"x": "1"}}, {"baz", map[string]string{}}}, true},
		{[]string{"a,,b"}, []ext{{"a", map[string]string{}}, {"b", map[string]string{}}}, true},
		{[]string{"foo", ";x"}, nil, false},
		{[]string{"a=b"}, nil, false},
		{[]string{`"quoted"`}, nil, false},
		{[]string{`a; b="unterminated`}, nil, false},
		// Two words in a row, which httphead alone reads leniently.
		{[]string{"x-evil permessage-deflate"}, nil, false},
		{[]string{"permessage-deflate; server_max_window_bits=10 x-evil"}, nil, false},
		{[]string{`a; b="c" d`}, nil, false},
	}
	for _, tt := range tests {
		opts, ok := ParseExtensions(tt.in)
		var got []ext
		for _, o := range opts {
			e := ext{Name: string(o.Name), Params: map[string]string{}}
			o.Parameters.ForEach(func(k, v []byte) bool {
				e.Params[string(k)] = string(v)
				return true
			})
			got = append(got, e)
		}
		if ok != tt.ok {
			t.Errorf("ParseExtensions(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseExtensions(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseExtensions(f *testing.F) {
	for _, s := range []string{
		"permessage-deflate; client_max_window_bits",
		`permessage-deflate; client_max_window_bits="10", x-foo`,
		"a,,b", `a; b="c\"d"`, ";", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		opts, ok := ParseExtensions([]string{v})
		if !ok && opts != nil {
			t.Fatalf("malformed %q gave options %v", v, opts)
		}
		for _, o := range opts {
			if len(o.Name) == 0 {
				t.Fatalf("%q: extension without a name", v)
			}
		}
	})
}
