package h1wire

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseContentLength(t *testing.T) {
	for v, want := range map[string]int64{"0": 0, "42": 42, " 7 ": 7, "999999999999999999": 999999999999999999} {
		if n, err := ParseContentLength(v); err != nil || n != want {
			t.Errorf("%q: %d, %v; want %d", v, n, err, want)
		}
	}
	for _, v := range []string{"", "+1", "-1", "1 2", "0x10", "1,1", "1000000000000000000", "１"} {
		if _, err := ParseContentLength(v); err != ErrBadLength {
			t.Errorf("%q: %v, want ErrBadLength", v, err)
		}
	}
}

func TestValidMethod(t *testing.T) {
	for m, want := range map[string]bool{"GET": true, "M-SEARCH": true, "PROPFIND": true, "": false, "G T": false, "G(T": false, "GÉT": false} {
		if ValidMethod(m) != want {
			t.Errorf("ValidMethod(%q) = %v", m, !want)
		}
	}
}

func TestLimitReader(t *testing.T) {
	tooLarge := errors.New("too large")
	l := &LimitReader{R: strings.NewReader("abcdef"), N: 4, TooLarge: tooLarge}
	b, err := io.ReadAll(l)
	if string(b) != "abcd" || err != tooLarge {
		t.Errorf("limited: %q, %v", b, err)
	}
	l.N = -1
	if b, err := io.ReadAll(l); string(b) != "ef" || err != nil {
		t.Errorf("unlimited: %q, %v", b, err)
	}
	l = &LimitReader{R: strings.NewReader(""), N: 10}
	l.Read(make([]byte, 1))
	if l.Err != io.EOF {
		t.Errorf("Err = %v, want the reader's EOF", l.Err)
	}
}

func TestReadTrailer(t *testing.T) {
	tests := []struct {
		in   string
		want http.Header
		err  string
		rest string
	}{
		{"\r\nNEXT", nil, "", "NEXT"},
		{"X-Sum: 1\r\nX-Sum: 2\r\nX-Other: a b\r\n\r\nNEXT", http.Header{"X-Sum": {"1", "2"}, "X-Other": {"a b"}}, "", "NEXT"},
		{"X-T : 1\r\n\r\n", nil, "invalid field name", ""},
		{"X-T: 1\r\n", nil, "unexpected EOF", ""},
		{"", nil, "unexpected EOF", ""},
	}
	for _, tc := range tests {
		br := bufio.NewReader(strings.NewReader(tc.in))
		h, err := ReadTrailer(br, textproto.NewReader(br))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		rest, _ := io.ReadAll(br)
		if err != nil || string(rest) != tc.rest {
			t.Errorf("%q: %v, rest %q", tc.in, err, rest)
		}
		if diff := cmp.Diff(tc.want, h); diff != "" {
			t.Errorf("%q: (-want +got)\n%s", tc.in, diff)
		}
	}
}

func TestMergeTrailer(t *testing.T) {
	lr := &LimitReader{R: strings.NewReader("X-Sum: 1\r\n\r\n"), N: -1, TooLarge: errors.New("too large")}
	br := bufio.NewReader(lr)
	dst := http.Header{"X-Declared": nil}
	if err := MergeTrailer(&dst, br, textproto.NewReader(br), lr, 1<<10); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(http.Header{"X-Declared": nil, "X-Sum": {"1"}}, dst); diff != "" || lr.N != -1 {
		t.Errorf("N %d, (-want +got)\n%s", lr.N, diff)
	}
	lr = &LimitReader{R: strings.NewReader("X-Big: " + strings.Repeat("b", 100) + "\r\n\r\n"), N: -1, TooLarge: errors.New("too large")}
	br = bufio.NewReader(lr)
	var none http.Header
	if err := MergeTrailer(&none, br, textproto.NewReader(br), lr, 32); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("a trailer over the limit: %v", err)
	}
}

func TestFieldNames(t *testing.T) {
	var got []string
	for k := range FieldNames([]string{"x-sum, ,X-Other", " expires\t", ""}) {
		got = append(got, k)
	}
	if diff := cmp.Diff([]string{"X-Sum", "X-Other", "Expires"}, got); diff != "" {
		t.Error(diff)
	}
}
