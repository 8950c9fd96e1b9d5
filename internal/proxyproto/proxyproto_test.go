package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equateAddrs = cmpopts.EquateComparable(netip.AddrPort{})

// v2 builds a version 2 header: version and command byte, family and
// protocol byte, then the block (addresses and TLVs).
func v2(verCmd, famProto byte, block ...[]byte) []byte {
	b := []byte(v2Signature)
	body := bytes.Join(block, nil)
	b = append(b, verCmd, famProto, byte(len(body)>>8), byte(len(body)))
	return append(b, body...)
}

// addrs4 and addrs6 are the address blocks of TCP/UDP over IPv4 and IPv6.
func addrs4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, sport), dport)
}

func addrs6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, sport), dport)
}

func tlv(typ byte, val []byte) []byte {
	return append([]byte{typ, byte(len(val) >> 8), byte(len(val))}, val...)
}

// withCRC returns the version 2 header h, which ends with a CRC32C TLV
// whose value is zero, with the value set to the header's checksum.
func withCRC(h []byte) []byte {
	binary.BigEndian.PutUint32(h[len(h)-4:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	return h
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var goodHeaders = []struct {
	name string
	in   []byte
	want Header
}{
	{"v1 TCP4", []byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
		Header{Version: 1, Family: IPv4, Transport: Stream, Source: ap("192.168.0.1:56324"), Destination: ap("192.168.0.11:443")}},
	{"v1 TCP4 ports 0 and 65535", []byte("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
		Header{Version: 1, Family: IPv4, Transport: Stream, Source: ap("0.0.0.0:0"), Destination: ap("255.255.255.255:65535")}},
	{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:DB8::2 1 2\r\n"),
		Header{Version: 1, Family: IPv6, Transport: Stream, Source: ap("[2001:db8::1]:1"), Destination: ap("[2001:db8::2]:2")}},
	{"v1 TCP6 mapped IPv4 (inet_ntop's spelling)", []byte("PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n"),
		Header{Version: 1, Family: IPv6, Transport: Stream, Source: ap("[::ffff:10.0.0.1]:1"), Destination: ap("[::1]:2")}},
	{"v1 TCP6 longest (104 bytes)", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65534\r\n"),
		Header{Version: 1, Family: IPv6, Transport: Stream, Source: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Destination: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65534")}},
	{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1}},
	{"v1 UNKNOWN with anything (107 bytes)", []byte("PROXY UNKNOWN " + strings.Repeat("x", 90) + "\r\n"), Header{Version: 1}},
	{"v2 TCP4", v2(0x21, 0x11, addrs4("203.0.113.7", "10.0.0.1", 40000, 443)),
		Header{Version: 2, Family: IPv4, Transport: Stream, Source: ap("203.0.113.7:40000"), Destination: ap("10.0.0.1:443")}},
	{"v2 TCP6", v2(0x21, 0x21, addrs6("2001:db8::7", "2001:db8::1", 40000, 443)),
		Header{Version: 2, Family: IPv6, Transport: Stream, Source: ap("[2001:db8::7]:40000"), Destination: ap("[2001:db8::1]:443")}},
	{"v2 TCP4 with TLVs (ALPN, authority, NOOP, AWS VPC endpoint)", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2),
		tlv(0x01, []byte("h2")), tlv(0x02, []byte("example.com")), tlv(0x04, nil), tlv(0xea, []byte("\x01vpce-0123456789abcdef0"))),
		Header{Version: 2, Family: IPv4, Transport: Stream, Source: ap("1.2.3.4:1"), Destination: ap("5.6.7.8:2")}},
	{"v2 TCP4 with a valid CRC32C", withCRC(v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), tlv(0x05, []byte("id")), tlv(0x03, make([]byte, 4)))),
		Header{Version: 2, Family: IPv4, Transport: Stream, Source: ap("1.2.3.4:1"), Destination: ap("5.6.7.8:2")}},
	{"v2 TCP6 with 600 bytes of TLV (more than the small buffer)", v2(0x21, 0x21, addrs6("::1", "::2", 1, 2), tlv(0xe0, bytes.Repeat([]byte{7}, 600))),
		Header{Version: 2, Family: IPv6, Transport: Stream, Source: ap("[::1]:1"), Destination: ap("[::2]:2")}},
	{"v2 longest accepted", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), tlv(0x04, make([]byte, MaxV2Length-12-3))),
		Header{Version: 2, Family: IPv4, Transport: Stream, Source: ap("1.2.3.4:1"), Destination: ap("5.6.7.8:2")}},
	{"v2 LOCAL", v2(0x20, 0x00), Header{Version: 2, Command: Local}},
	{"v2 LOCAL with addresses (ignored)", v2(0x20, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2)), Header{Version: 2, Command: Local}},
	{"v2 LOCAL with any family byte (ignored)", v2(0x20, 0xff, []byte("junk")), Header{Version: 2, Command: Local}},
	{"v2 PROXY UNSPEC", v2(0x21, 0x00, []byte("ignored")), Header{Version: 2}},
	{"v2 UDP4", v2(0x21, 0x12, addrs4("1.2.3.4", "5.6.7.8", 53, 53)),
		Header{Version: 2, Family: IPv4, Transport: Datagram, Source: ap("1.2.3.4:53"), Destination: ap("5.6.7.8:53")}},
	{"v2 UDP6", v2(0x21, 0x22, addrs6("::1", "::2", 53, 53)),
		Header{Version: 2, Family: IPv6, Transport: Datagram, Source: ap("[::1]:53"), Destination: ap("[::2]:53")}},
	{"v2 Unix stream", v2(0x21, 0x31, make([]byte, 216)), Header{Version: 2, Family: Unix, Transport: Stream}},
	{"v2 Unix datagram", v2(0x21, 0x32, make([]byte, 216)), Header{Version: 2, Family: Unix, Transport: Datagram}},
}

var badHeaders = []struct {
	name string
	in   []byte
}{
	{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")},
	{"TLS ClientHello", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")},
	{"lower case", []byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n")},
	{"PROXY without space", []byte("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n")},
	{"v1 lone LF", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")},
	{"v1 lone CR", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET")},
	{"v1 LF inside", []byte("PROXY UNKNOWN a\nb\r\n")},
	{"v1 unknown protocol", []byte("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n")},
	{"v1 UDP4", []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n")},
	{"v1 UNKNOWNX", []byte("PROXY UNKNOWNX\r\n")},
	{"v1 empty protocol", []byte("PROXY \r\nGET / HTTP/1.1\r\n\r\n")},
	{"v1 no CRLF in 107 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("x", 93) + "\r\n")},
	{"v1 CR as the 107th byte", []byte("PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n")},
	{"v1 IPv4 leading zero", []byte("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n")},
	{"v1 IPv4 octet 256", []byte("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n")},
	{"v1 IPv4 three octets", []byte("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n")},
	{"v1 IPv4 five octets", []byte("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n")},
	{"v1 IPv4 empty octet", []byte("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n")},
	{"v1 IPv4 sign", []byte("PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n")},
	{"v1 TCP4 with IPv6", []byte("PROXY TCP4 ::1 5.6.7.8 1 2\r\n")},
	{"v1 TCP6 with IPv4", []byte("PROXY TCP6 1.2.3.4 ::1 1 2\r\n")},
	{"v1 TCP6 with a zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n")},
	{"v1 TCP6 bad group", []byte("PROXY TCP6 12345::1 ::1 1 2\r\n")},
	{"v1 port leading zero", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n")},
	{"v1 port 65536", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n")},
	{"v1 port negative", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n")},
	{"v1 port hex", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n")},
	{"v1 three fields", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n")},
	{"v1 five fields", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n")},
	{"v1 double space", []byte("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n")},
	{"v1 trailing space", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n")},
	{"v1 tab", []byte("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n")},
	{"v2 bad signature", append([]byte("\r\n\r\n\x00\r\nQUIT\r"), v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2))[12:]...)},
	{"v2 version 1", v2(0x11, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 version 3", v2(0x31, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 command 2", v2(0x22, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 family 4", v2(0x21, 0x41, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 protocol 3", v2(0x21, 0x13, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 IPv4 with protocol UNSPEC", v2(0x21, 0x10, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 UNSPEC family with STREAM", v2(0x21, 0x01, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 TCP4 short address block", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2)[:8])},
	{"v2 TCP6 with an IPv4 block", v2(0x21, 0x21, addrs4("1.2.3.4", "5.6.7.8", 1, 2))},
	{"v2 Unix short address block", v2(0x21, 0x31, make([]byte, 200))},
	{"v2 longer than MaxV2Length", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), tlv(0x04, make([]byte, MaxV2Length-12-3+1)))},
	{"v2 TLV truncated", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), []byte{0x04, 0})},
	{"v2 TLV past the end", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), []byte{0x04, 0, 5, 1, 2})},
	{"v2 CRC32C wrong", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), tlv(0x03, []byte{1, 2, 3, 4}))},
	{"v2 CRC32C of 3 bytes", v2(0x21, 0x11, addrs4("1.2.3.4", "5.6.7.8", 1, 2), tlv(0x03, []byte{1, 2, 3}))},
}

// after is what a client sends behind the header.
const after = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

func TestParse(t *testing.T) {
	for _, tt := range goodHeaders {
		in := append(bytes.Clone(tt.in), after...)
		h, n, err := Parse(in)
		if err != nil || n != len(tt.in) {
			t.Errorf("%s: Parse: %d bytes, %v; want %d", tt.name, n, err, len(tt.in))
			continue
		}
		if diff := cmp.Diff(tt.want, h, equateAddrs); diff != "" {
			t.Errorf("%s: header (-want +got):\n%s", tt.name, diff)
		}
		// Every prefix is incomplete, never malformed; once the length is
		// known (a version 2 header's 16 bytes), it is the header's.
		for k := range len(tt.in) {
			_, n, err := Parse(tt.in[:k])
			if !errors.Is(err, ErrIncomplete) || (n != 0 && n != len(tt.in)) {
				t.Errorf("%s: Parse of the first %d bytes: %d, %v; want ErrIncomplete", tt.name, k, n, err)
				break
			}
		}
	}
	for _, tt := range badHeaders {
		in := append(bytes.Clone(tt.in), after...)
		if h, n, err := Parse(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse: %+v, %d, %v; want ErrMalformed", tt.name, h, n, err)
		}
	}
}

func TestHeaderRelayed(t *testing.T) {
	for _, tt := range goodHeaders {
		want := tt.want.Command == Proxy && tt.want.Transport == Stream && tt.want.Family != Unix
		if got := tt.want.Relayed(); got != want {
			t.Errorf("%s: Relayed() = %v", tt.name, got)
		}
	}
}

// readers are the ways Read is given a header: in memory (read in
// pieces), and on a loopback TCP connection (peeked at), written at once
// or in pieces.
var readers = []struct {
	name string
	open func(t *testing.T, data []byte) io.Reader
}{
	{"bytes", func(t *testing.T, data []byte) io.Reader { return bytes.NewReader(data) }},
	{"one byte at a time", func(t *testing.T, data []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) }},
	{"TCP, one write", func(t *testing.T, data []byte) io.Reader { return tcpWith(t, data) }},
	{"TCP, split writes", func(t *testing.T, data []byte) io.Reader { return tcpWith(t, data, 1, 5, 13, 16, 17, 30) }},
}

// tcpWith returns the server side of a loopback TCP connection whose
// client writes data, in pieces cut at the offsets given (a few ms
// apart, as a slow sender), then closes.
func tcpWith(t *testing.T, data []byte, cuts ...int) *net.TCPConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		sc.Close()
		cc.Close()
		<-done
	})
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		defer close(done)
		defer cc.Close()
		prev := 0
		for _, c := range cuts {
			if c <= prev || c >= len(data) {
				continue
			}
			if _, err := cc.Write(data[prev:c]); err != nil {
				return
			}
			prev = c
			time.Sleep(2 * time.Millisecond) // a slow sender, not synchronization
		}
		cc.Write(data[prev:])
	}()
	return sc.(*net.TCPConn)
}

func TestRead(t *testing.T) {
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			for _, tt := range goodHeaders {
				r := rd.open(t, append(bytes.Clone(tt.in), after...))
				h, err := Read(r)
				if err != nil {
					t.Errorf("%s: %v", tt.name, err)
					continue
				}
				if diff := cmp.Diff(tt.want, h, equateAddrs); diff != "" {
					t.Errorf("%s: header (-want +got):\n%s", tt.name, diff)
				}
				// Not a byte more: the request is all there.
				if rest, err := io.ReadAll(r); string(rest) != after {
					t.Errorf("%s: after the header: %q (%v), want %q", tt.name, rest, err, after)
				}
			}
			for _, tt := range badHeaders {
				r := rd.open(t, append(bytes.Clone(tt.in), after...))
				if h, err := Read(r); !errors.Is(err, ErrMalformed) {
					t.Errorf("%s: %+v, %v; want ErrMalformed", tt.name, h, err)
				}
			}
			// A connection that ends within its header.
			for _, tt := range goodHeaders[:9] {
				r := rd.open(t, tt.in[:len(tt.in)-1])
				if h, err := Read(r); !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("%s cut short: %+v, %v; want io.ErrUnexpectedEOF", tt.name, h, err)
				}
			}
		})
	}
}

// A header alone, the client then waiting for an answer: Read returns
// without waiting for bytes that are not the header's, the shortest
// header included.
func TestReadDoesNotWaitPastHeader(t *testing.T) {
	for _, in := range [][]byte{[]byte("PROXY UNKNOWN\r\n"), goodHeaders[0].in, v2(0x20, 0x00), goodHeaders[7].in} {
		for _, rd := range []string{"TCP", "pipe"} {
			var r io.Reader
			if rd == "TCP" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				cc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				sc, err := ln.Accept()
				ln.Close()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cc.Close(); sc.Close() })
				cc.Write(in)
				sc.SetReadDeadline(time.Now().Add(5 * time.Second))
				r = sc
			} else {
				sc, cc := net.Pipe()
				t.Cleanup(func() { cc.Close(); sc.Close() })
				go cc.Write(in)
				sc.SetReadDeadline(time.Now().Add(5 * time.Second))
				r = sc
			}
			if _, err := Read(r); err != nil {
				t.Errorf("%s %q: %v", rd, in, err)
			}
		}
	}
}

func TestReceive(t *testing.T) {
	for _, tt := range []struct {
		name       string
		in         []byte
		remote     string // "" : the connection's own
		local      string
		notServed  bool
		wantHeader Header
	}{
		{"v1 TCP4", goodHeaders[0].in, "192.168.0.1:56324", "192.168.0.11:443", false, goodHeaders[0].want},
		{"v2 TCP6", goodHeaders[8].in, "[2001:db8::7]:40000", "[2001:db8::1]:443", false, goodHeaders[8].want},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", "", false, Header{Version: 1}},
		{"v2 LOCAL", v2(0x20, 0x00), "", "", false, Header{Version: 2, Command: Local}},
		{"v2 UNSPEC", v2(0x21, 0x00), "", "", false, Header{Version: 2}},
		{"v2 UDP4", v2(0x21, 0x12, addrs4("1.2.3.4", "5.6.7.8", 53, 53)), "", "", true, Header{}},
		{"v2 Unix", v2(0x21, 0x31, make([]byte, 216)), "", "", true, Header{}},
	} {
		for _, onTCP := range []bool{true, false} {
			var c net.Conn
			data := append(bytes.Clone(tt.in), after...)
			if onTCP {
				c = tcpWith(t, data)
			} else {
				sc, cc := net.Pipe()
				t.Cleanup(func() { cc.Close(); sc.Close() })
				go func() { cc.Write(data); cc.Close() }()
				c = sc
			}
			got, h, err := Receive(c)
			if tt.notServed {
				if !errors.Is(err, ErrNotServed) || got != nil {
					t.Errorf("%s: %v, %v; want ErrNotServed", tt.name, got, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
				continue
			}
			if diff := cmp.Diff(tt.wantHeader, h, equateAddrs); diff != "" {
				t.Errorf("%s: header (-want +got):\n%s", tt.name, diff)
			}
			wantRemote, wantLocal := tt.remote, tt.local
			if wantRemote == "" {
				wantRemote, wantLocal = c.RemoteAddr().String(), c.LocalAddr().String()
			}
			if got.RemoteAddr().String() != wantRemote || got.LocalAddr().String() != wantLocal {
				t.Errorf("%s: addresses %v %v, want %v %v", tt.name, got.RemoteAddr(), got.LocalAddr(), wantRemote, wantLocal)
			}
			if _, ok := got.RemoteAddr().(*net.TCPAddr); tt.remote != "" && !ok {
				t.Errorf("%s: RemoteAddr is a %T, want *net.TCPAddr", tt.name, got.RemoteAddr())
			}
			// A TCP connection keeps what servers look for on *net.TCPConn.
			if _, isTCP := c.(*net.TCPConn); isTCP {
				_, rf := got.(io.ReaderFrom)
				_, cw := got.(interface{ CloseWrite() error })
				_, sc := got.(syscall.Conn)
				if !rf || !cw || !sc {
					t.Errorf("%s: %T: ReaderFrom %v, CloseWrite %v, syscall.Conn %v; want all", tt.name, got, rf, cw, sc)
				}
			}
			if rest, _ := io.ReadAll(got); string(rest) != after {
				t.Errorf("%s: after the header: %q", tt.name, rest)
			}
		}
	}
}

// A read deadline bounds Read, on both paths.
func TestReadDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ps, pc := net.Pipe()
	defer ps.Close()
	defer pc.Close()
	for _, c := range []net.Conn{sc, ps} {
		begin := time.Now()
		c.SetReadDeadline(begin.Add(100 * time.Millisecond))
		if _, err := Read(c); !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
			t.Errorf("%T: %v, want a timeout", c, err)
		}
		if d := time.Since(begin); d < 90*time.Millisecond || d > 5*time.Second {
			t.Errorf("%T: returned after %v, want about 100ms", c, d)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// FuzzParse checks Parse's and Read's invariants on any input: no panic;
// a header found is at most as long as the protocol allows, does not
// depend on the bytes after it, its prefixes are incomplete (never
// malformed), and its relayed addresses are valid and of its family;
// Read finds the same header and leaves every byte after it in the
// reader.
func FuzzParse(f *testing.F) {
	for _, tt := range goodHeaders {
		f.Add(append(bytes.Clone(tt.in), after...))
	}
	for _, tt := range badHeaders {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := Parse(data)
		r := iotest.HalfReader(bytes.NewReader(data))
		rh, rerr := Read(r)
		switch {
		case err == nil:
			if n <= 0 || n > len(data) || n > v2FixedLength+MaxV2Length || (h.Version == 1 && n > MaxV1Length) {
				t.Fatalf("Parse: header of %d bytes out of %d (version %d)", n, len(data), h.Version)
			}
			if h2, n2, err2 := Parse(data[:n]); err2 != nil || n2 != n || h2 != h {
				t.Fatalf("Parse of the header alone: %+v, %d, %v; with what follows: %+v, %d", h2, n2, err2, h, n)
			}
			for k := range n {
				if _, kn, err := Parse(data[:k]); !errors.Is(err, ErrIncomplete) || (kn != 0 && kn != n) {
					t.Fatalf("Parse of the first %d bytes of a %d-byte header: %d, %v; want ErrIncomplete", k, n, kn, err)
				}
			}
			if h.Relayed() {
				src, dst := h.Source.Addr(), h.Destination.Addr()
				if !src.IsValid() || !dst.IsValid() || src.Zone() != "" || dst.Zone() != "" ||
					src.Is4() != (h.Family == IPv4) || dst.Is4() != (h.Family == IPv4) {
					t.Fatalf("relayed header with addresses %v %v, family %d", h.Source, h.Destination, h.Family)
				}
			}
			if rerr != nil || rh != h {
				t.Fatalf("Read: %+v, %v; Parse: %+v", rh, rerr, h)
			}
			if rest, _ := io.ReadAll(r); !bytes.Equal(rest, data[n:]) {
				t.Fatalf("after Read: %q, want %q", rest, data[n:])
			}
		case errors.Is(err, ErrIncomplete):
			if n != 0 && n <= len(data) {
				t.Fatalf("Parse: incomplete with a length %d within the %d bytes", n, len(data))
			}
			if !errors.Is(rerr, io.ErrUnexpectedEOF) {
				t.Fatalf("Read of an incomplete header: %+v, %v", rh, rerr)
			}
		case errors.Is(err, ErrMalformed):
			if !errors.Is(rerr, ErrMalformed) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
				t.Fatalf("Read of a malformed header: %+v, %v", rh, rerr)
			}
		default:
			t.Fatalf("Parse: %v, neither ErrIncomplete nor ErrMalformed", err)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"v1 TCP4", "v1 TCP6", "v2 TCP4", "v2 TCP6", "v2 TCP4 with TLVs (ALPN, authority, NOOP, AWS VPC endpoint)"} {
		var in []byte
		for _, tt := range goodHeaders {
			if tt.name == name {
				in = append(bytes.Clone(tt.in), after...)
			}
		}
		b.Run(strings.Fields(name)[0]+"-"+strings.Fields(name)[1]+map[bool]string{true: "-TLVs"}[strings.Contains(name, "TLV")], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, _, err := Parse(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRead reads headers from memory (the path for readers that
// cannot peek): the pieces' reads and the pooled buffer.
func BenchmarkRead(b *testing.B) {
	for _, i := range []int{0, 7} {
		tt := goodHeaders[i]
		in := append(bytes.Clone(tt.in), after...)
		b.Run(strings.ReplaceAll(tt.name, " ", "-"), func(b *testing.B) {
			b.ReportAllocs()
			r := bytes.NewReader(in)
			for b.Loop() {
				r.Reset(in)
				if _, err := Read(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
