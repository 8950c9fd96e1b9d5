//go:build !unix

package h1client

import "net"

type prober struct{}

func newProber(net.Conn) *prober { return nil }

// alive cannot peek on this platform; a stale connection is detected by
// the first read and the request retried (see Client.Do).
func (pc *conn) alive() bool { return true }
