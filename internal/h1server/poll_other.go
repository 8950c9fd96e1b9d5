//go:build !unix

package h1server

// canPoll reports whether an idle connection can wait for its next
// request on the poller without a buffer. Off Unix it cannot: an idle
// connection then waits in a pooled bufio.Reader's Peek, which is correct
// and holds a 4 KiB buffer while it waits.
const canPoll = false

// fill and peekTLS are never called when canPoll is false.
func (c *conn) fill(uintptr) bool    { panic("h1server: fill without a poller") }
func (c *conn) peekTLS(uintptr) bool { panic("h1server: peekTLS without a poller") }
