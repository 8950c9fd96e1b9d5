package canonical

import (
	"errors"
	"testing"
)

// A name whose last label is a number is an IPv4 address to browsers and
// to inet_aton resolvers, in a spelling of its own: refused, so that no
// decision is made on a name that reaches 127.0.0.1.
func TestHostEndsInNumber(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "2130706433", bad: true},
		{in: "127.1", bad: true},
		{in: "0x7f.1", bad: true},
		{in: "0X7F000001", bad: true},
		{in: "0177.0.0.1", bad: true},
		{in: "127.000.000.001", bad: true},
		{in: "1.2.3.4.5", bad: true},
		{in: "example.0x", bad: true},
		{in: "example.123.", bad: true},
		{in: "１２７.０.０.１", bad: true}, // full-width digits: a dotted quad only after IDNA mapping
		{in: "１２７.１", bad: true},
		{in: "127.0.0.1:8080", want: "127.0.0.1:8080"},
		{in: "1.example", want: "1.example"},
		{in: "example.123a", want: "example.123a"},
		{in: "example.0xg", want: "example.0xg"},
	} {
		got, err := Host(tc.in, "http")
		switch {
		case tc.bad && !errors.Is(err, ErrBadHost):
			t.Errorf("Host(%q) = %q, %v; want ErrBadHost", tc.in, got, err)
		case !tc.bad && (err != nil || got != tc.want):
			t.Errorf("Host(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
