//go:build !unix

package h1client

import "net"

// alive cannot peek on this platform; a stale connection is detected by
// the first read and the request retried (see Client.Do).
func alive(net.Conn) bool { return true }
