// Package proxyproto reads the PROXY protocol header (versions 1 and 2)
// that a layer 4 load balancer (HAProxy's send-proxy and send-proxy-v2,
// AWS NLB, Google Cloud and Azure load balancers) puts in front of a
// relayed TCP connection to tell the server who the client is:
// https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt (cited
// below as "the spec").
//
// Parse decodes a header held in memory; Read reads one from a connection
// and not a byte more, so that what follows it (a TLS ClientHello, an
// HTTP request, the HTTP/2 preface) stays in the connection for its
// server; Receive reads it and returns the connection with the header's
// addresses as its RemoteAddr and LocalAddr.
//
// Parsing is strict, as the spec asks ("any sequence which does not
// exactly match the protocol must be discarded"): version 1 lines of at
// most 107 bytes ending in CRLF, with IPv4 addresses and ports in
// canonical decimal (no leading zeros), exactly one space between fields;
// version 2 headers with the version 2, a known command, a known family
// and transport, an address block as long as the family needs, and
// well-formed TLVs (skipped, but a CRC32C TLV is checked), at most
// MaxV2Length bytes after the fixed 16.
//
// Written by hand: sluice's library module may depend only on
// github.com/gobwas/ws, golang.org/x/net and github.com/google/go-cmp, so
// github.com/pires/go-proxyproto is not an option; the protocol is small.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
)

// MaxV1Length is the longest version 1 header, CRLF included (the spec,
// §2.1: "PROXY UNKNOWN" with two full IPv6 addresses and ports).
const MaxV1Length = 107

// MaxV2Length bounds the length field of a version 2 header: the address
// block and the TLVs after the fixed 16 bytes. The protocol allows 65535;
// senders put a few hundred bytes there at most (216 for two Unix socket
// paths, plus TLVs such as HAProxy's TLS details, AWS's VPC endpoint ID or
// Google Cloud's PSC connection ID), so a longer header is refused rather
// than buffered.
const MaxV2Length = 4096

// v2Signature is the 12 bytes that start a version 2 header (the spec,
// §2.2).
const v2Signature = "\r\n\r\n\x00\r\nQUIT\n"

// minLength is the length of the shortest header: "PROXY UNKNOWN\r\n". A
// version 2 header is 16 bytes at least.
const minLength = 15

var (
	// ErrIncomplete is Parse's answer to bytes that begin a header
	// without holding all of it.
	ErrIncomplete = errors.New("proxyproto: incomplete header")

	// ErrMalformed is wrapped by the errors for bytes that are not a
	// valid PROXY protocol header.
	ErrMalformed = errors.New("proxyproto: malformed header")
)

// Command says whether a header describes a relayed connection.
type Command uint8

const (
	// Proxy (version 1, and version 2's PROXY command): the connection
	// was relayed for a client, whose connection the header describes.
	Proxy Command = iota

	// Local (version 2's LOCAL command): the sender opened the
	// connection for itself, a health check; its addresses are the
	// connection's own.
	Local
)

// Family is the address family of the relayed connection.
type Family uint8

// The families of the spec, §2.2 (AF_UNSPEC, AF_INET, AF_INET6,
// AF_UNIX); version 1's UNKNOWN is Unspec, TCP4 IPv4, TCP6 IPv6.
const (
	Unspec Family = iota
	IPv4
	IPv6
	Unix
)

// Transport is the transport protocol of the relayed connection.
type Transport uint8

// The transports of the spec, §2.2; version 1's TCP4 and TCP6 are Stream.
const (
	UnspecTransport Transport = iota
	Stream
	Datagram
)

// Header is a decoded PROXY protocol header.
type Header struct {
	Version   int // 1 or 2
	Command   Command
	Family    Family    // Unspec for Local
	Transport Transport // UnspecTransport for Local

	// Source and Destination are the relayed connection's client and
	// the address it connected to, for the IPv4 and IPv6 families
	// (version 2's ports are 0 for Unspec transport); zero otherwise.
	Source, Destination netip.AddrPort
}

// Relayed reports whether the header carries the addresses of a relayed
// TCP connection, which replace the connection's own: the Proxy command
// with TCP over IPv4 or IPv6.
func (h Header) Relayed() bool {
	return h.Command == Proxy && (h.Family == IPv4 || h.Family == IPv6) && h.Transport == Stream
}

// Parse decodes the header at the start of b and returns it with its
// length in bytes; the bytes after it are not looked at. When b is the
// beginning of a header and holds too few bytes to decide, it returns
// ErrIncomplete, with n the header's whole length once b holds enough to
// know it (the first 16 bytes of a version 2 header), 0 before. Any other
// error wraps ErrMalformed: b cannot start a header.
//
// Parse does not allocate, except for a version 1 line with IPv6
// addresses (one string per address) and for errors.
func Parse(b []byte) (h Header, n int, err error) {
	if len(b) == 0 {
		return Header{}, 0, ErrIncomplete
	}
	switch b[0] {
	case v2Signature[0]:
		return parseV2(b)
	case 'P':
		return parseV1(b)
	}
	return Header{}, 0, fmt.Errorf("%w: starts with %q, neither %q nor the version 2 signature", ErrMalformed, b[0], "PROXY")
}

// parseV1 parses a version 1 line (the spec, §2.1).
func parseV1(b []byte) (Header, int, error) {
	const prefix = "PROXY "
	if k := min(len(b), len(prefix)); string(b[:k]) != prefix[:k] {
		return Header{}, 0, fmt.Errorf("%w: version 1 line not starting with %q", ErrMalformed, prefix)
	}
	// The line ends at the first CR, which an LF must follow: a lone CR
	// or LF never ends it (the spec), nor may it appear in it.
	limit := min(len(b), MaxV1Length)
	end := bytes.IndexAny(b[:limit], "\r\n")
	switch {
	case end >= 0 && b[end] == '\n':
		return Header{}, 0, fmt.Errorf("%w: version 1 line with a lone LF", ErrMalformed)
	case (end < 0 || end == limit-1) && limit == MaxV1Length:
		return Header{}, 0, fmt.Errorf("%w: no CRLF in the first %d bytes of a version 1 line", ErrMalformed, MaxV1Length)
	case end < 0 || end == limit-1:
		return Header{}, 0, ErrIncomplete
	case b[end+1] != '\n':
		return Header{}, 0, fmt.Errorf("%w: version 1 line with a lone CR", ErrMalformed)
	}
	n := end + 2
	line := b[len(prefix):end]
	h := Header{Version: 1}
	proto, rest, _ := bytes.Cut(line, []byte(" "))
	switch string(proto) {
	case "UNKNOWN":
		// "the receiver must ignore anything presented before the CRLF"
		return h, n, nil
	case "TCP4":
		h.Family = IPv4
	case "TCP6":
		h.Family = IPv6
	default:
		return Header{}, 0, fmt.Errorf("%w: version 1 protocol %q, want TCP4, TCP6 or UNKNOWN", ErrMalformed, proto)
	}
	h.Transport = Stream
	var f [4][]byte
	for i := range f {
		var ok bool
		if f[i], rest, ok = bytes.Cut(rest, []byte(" ")); ok != (i < 3) || len(f[i]) == 0 {
			return Header{}, 0, fmt.Errorf("%w: version 1 %s line without exactly four fields separated by one space", ErrMalformed, proto)
		}
	}
	src, err := parseV1Addr(f[0], h.Family)
	if err != nil {
		return Header{}, 0, err
	}
	dst, err := parseV1Addr(f[1], h.Family)
	if err != nil {
		return Header{}, 0, err
	}
	sport, ok1 := parseDecimal(f[2], 65535)
	dport, ok2 := parseDecimal(f[3], 65535)
	if !ok1 || !ok2 {
		return Header{}, 0, fmt.Errorf("%w: version 1 ports %q %q, want decimals 0-65535 without leading zeros", ErrMalformed, f[2], f[3])
	}
	h.Source = netip.AddrPortFrom(src, uint16(sport))
	h.Destination = netip.AddrPortFrom(dst, uint16(dport))
	return h, n, nil
}

// parseV1Addr parses an address of a version 1 line: IPv4 as four
// decimals without leading zeros; IPv6 as netip reads it (hexadecimal
// groups, one "::", an embedded IPv4 as senders' inet_ntop writes a
// mapped address), without a zone.
func parseV1Addr(b []byte, fam Family) (netip.Addr, error) {
	if fam == IPv4 {
		var a [4]byte
		rest := b
		for i := range a {
			field := rest
			if i < 3 {
				var ok bool
				if field, rest, ok = bytes.Cut(rest, []byte(".")); !ok {
					break
				}
			}
			v, ok := parseDecimal(field, 255)
			if !ok {
				break
			}
			a[i] = byte(v)
			if i == 3 {
				return netip.AddrFrom4(a), nil
			}
		}
		return netip.Addr{}, fmt.Errorf("%w: version 1 IPv4 address %q", ErrMalformed, b)
	}
	if bytes.IndexByte(b, '%') < 0 && bytes.IndexByte(b, ':') >= 0 {
		if a, err := netip.ParseAddr(string(b)); err == nil && a.Is6() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: version 1 IPv6 address %q", ErrMalformed, b)
}

// parseDecimal parses a decimal number of at most max without a leading
// zero (the spec: "to avoid any possible confusion with octal numbers").
func parseDecimal(b []byte, max int) (int, bool) {
	if len(b) == 0 || len(b) > 5 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = 10*v + int(c-'0')
	}
	return v, v <= max
}

// Version 2 (the spec, §2.2).
const (
	v2FixedLength = 16
	tlvCRC32C     = 0x03
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// parseV2 parses a version 2 header.
func parseV2(b []byte) (Header, int, error) {
	if k := min(len(b), len(v2Signature)); string(b[:k]) != v2Signature[:k] {
		return Header{}, 0, fmt.Errorf("%w: not the version 2 signature", ErrMalformed)
	}
	if len(b) > len(v2Signature) && b[12]>>4 != 2 {
		return Header{}, 0, fmt.Errorf("%w: version 2 signature with version %d", ErrMalformed, b[12]>>4)
	}
	if len(b) < v2FixedLength {
		return Header{}, 0, ErrIncomplete
	}
	length := int(binary.BigEndian.Uint16(b[14:16]))
	if length > MaxV2Length {
		return Header{}, 0, fmt.Errorf("%w: version 2 header of %d bytes after the fixed 16, more than the %d accepted", ErrMalformed, length, MaxV2Length)
	}
	n := v2FixedLength + length
	h := Header{Version: 2}
	switch b[12] & 0xf {
	case 0x0:
		h.Command = Local
	case 0x1:
		h.Command = Proxy
	default:
		return Header{}, 0, fmt.Errorf("%w: version 2 command %#x", ErrMalformed, b[12]&0xf)
	}
	fam, proto := Family(b[13]>>4), Transport(b[13]&0xf)
	if h.Command == Proxy && (fam > Unix || proto > Datagram || (fam == Unspec) != (proto == UnspecTransport)) {
		return Header{}, 0, fmt.Errorf("%w: version 2 family and protocol %#02x", ErrMalformed, b[13])
	}
	if len(b) < n {
		return Header{}, n, ErrIncomplete
	}
	if h.Command == Local || fam == Unspec {
		// LOCAL: "discard the protocol block including the family";
		// UNSPEC: "the receiver should ignore address information",
		// and where it would end (and the TLVs start) is unknown.
		return h, n, nil
	}
	h.Family, h.Transport = fam, proto
	block := b[v2FixedLength:n]
	var addrLen int
	switch fam {
	case IPv4:
		addrLen = 2*4 + 2*2
	case IPv6:
		addrLen = 2*16 + 2*2
	case Unix:
		addrLen = 2 * 108
	}
	if len(block) < addrLen {
		return Header{}, 0, fmt.Errorf("%w: version 2 address block of %d bytes, want %d for family and protocol %#02x", ErrMalformed, len(block), addrLen, b[13])
	}
	switch fam {
	case IPv4:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[0:4])), binary.BigEndian.Uint16(block[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[4:8])), binary.BigEndian.Uint16(block[10:12]))
	case IPv6:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[0:16])), binary.BigEndian.Uint16(block[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[16:32])), binary.BigEndian.Uint16(block[34:36]))
	}
	if err := checkTLVs(b[:n], v2FixedLength+addrLen); err != nil {
		return Header{}, 0, err
	}
	return h, n, nil
}

// checkTLVs checks the TLVs of header hdr from offset off: each whole
// within the header, and a CRC32C (the spec, §2.2.3) 4 bytes long and
// matching the header's checksum.
func checkTLVs(hdr []byte, off int) error {
	for off < len(hdr) {
		if len(hdr)-off < 3 {
			return fmt.Errorf("%w: version 2 TLV truncated", ErrMalformed)
		}
		typ, vlen := hdr[off], int(binary.BigEndian.Uint16(hdr[off+1:off+3]))
		val := off + 3
		if vlen > len(hdr)-val {
			return fmt.Errorf("%w: version 2 TLV %#02x of %d bytes past the header's end", ErrMalformed, typ, vlen)
		}
		if typ == tlvCRC32C {
			if vlen != 4 {
				return fmt.Errorf("%w: version 2 CRC32C TLV of %d bytes", ErrMalformed, vlen)
			}
			// The checksum of the header with the field's bytes zeroed.
			var zero [4]byte
			sum := crc32.Update(0, castagnoli, hdr[:val])
			sum = crc32.Update(sum, castagnoli, zero[:])
			sum = crc32.Update(sum, castagnoli, hdr[val+4:])
			if sum != binary.BigEndian.Uint32(hdr[val:val+4]) {
				return fmt.Errorf("%w: version 2 CRC32C mismatch", ErrMalformed)
			}
		}
		off = val + vlen
	}
	return nil
}
