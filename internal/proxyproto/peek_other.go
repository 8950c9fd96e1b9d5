//go:build !unix

package proxyproto

import "syscall"

// canPeek reports whether Read can peek at a TCP socket: off Unix it does
// not, and reads in pieces that belong to the header.
const canPeek = false

type rawConn = syscall.RawConn

// peek is never called when canPeek is false.
func peek(rawConn, []byte) (int, error) { panic("proxyproto: peek without canPeek") }
