//go:build !unix && !windows

package h1client

// peekFD cannot look at a socket on this platform: connections are
// never reused there.
func peekFD(uintptr, []byte) idleState { return idleUnknown }
