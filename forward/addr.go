package forward

import "net/netip"

// special lists the networks that Public refuses besides those the
// netip.Addr predicates name (loopback, private, link-local, multicast,
// unspecified): from the IANA special-purpose address registries
// (RFC 6890), the ones not globally reachable or that embed another
// address a check would not see.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (CGNAT; Alibaba's metadata at 100.100.100.200)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo, benchmarking, ORCHID...)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	netip.MustParsePrefix("3fff::/20"),       // documentation
	netip.MustParsePrefix("5f00::/16"),       // segment routing SIDs
}

// Embedding networks: the IPv4 address inside is checked instead.
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052
	sixTo4 = netip.MustParsePrefix("2002::/16")    // RFC 3056
)

// Public reports whether addr is a public unicast address, one a forward
// proxy may connect to for anyone: not loopback (127.0.0.0/8, ::1),
// private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, where
// AWS's IPv6 metadata fd00:ec2::254 is), link-local (169.254.0.0/16, the
// cloud metadata address 169.254.169.254, fe80::/10), multicast,
// unspecified, shared (100.64.0.0/10), documentation, benchmarking or
// reserved. An IPv4-mapped IPv6 address is judged as its IPv4 address, and
// so are the IPv4 addresses inside NAT64 (64:ff9b::/96) and 6to4
// (2002::/16) ones.
func Public(addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.IsValid() || addr.Zone() != "" {
		return false
	}
	if addr.Is6() && (nat64.Contains(addr) || sixTo4.Contains(addr)) {
		b := addr.As16()
		var v4 [4]byte
		if nat64.Contains(addr) {
			copy(v4[:], b[12:])
		} else {
			copy(v4[:], b[2:6])
		}
		return Public(netip.AddrFrom4(v4))
	}
	if !addr.IsGlobalUnicast() || addr.IsPrivate() || addr.IsLoopback() || addr.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range special {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}
