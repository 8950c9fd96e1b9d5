// Package idle opens connections that a server must then keep while they
// do nothing: HTTP/1.1 keep-alive connections that have served one
// request, and WebSocket connections that have echoed one message. The
// benchmark's idle-memory scenarios (E and E-ws) hold thousands of them
// open against a proxy and read its memory.
package idle

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gobwas/ws"
)

// OpenHTTP connects to addr and sends one GET for path. It returns the
// connection once the whole 200 response has been read and the server
// has not asked to close it, so that the server holds it in its
// keep-alive state.
func OpenHTTP(addr, path string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	if err := readOneResponse(c, addr, path); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func readOneResponse(c net.Conn, addr, path string) error {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sluice-bench-idle\r\n\r\n", path, addr); err != nil {
		return err
	}
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case resp.Close:
		return errors.New("the server asked to close the connection")
	case br.Buffered() > 0:
		return errors.New("bytes after the response")
	}
	return nil
}

// Message is what OpenWebSocket sends to check the tunnel.
var Message = []byte("sluice bench: idle WebSocket check")

// OpenWebSocket connects to addr, upgrades to WebSocket on path (the
// server must answer 101 with the right Sec-WebSocket-Accept), sends one
// masked binary Message and reads its echo. It returns the connection when
// the echo came back intact and nothing else is pending, so that every
// hop of the tunnel has carried a message both ways and is now idle.
func OpenWebSocket(addr, path string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := ws.Dialer{Timeout: timeout}
	c, br, _, err := d.Dial(ctx, "ws://"+addr+path)
	if err != nil {
		return nil, err
	}
	var r io.Reader = c
	if br != nil {
		r = br
		defer ws.PutReader(br)
	}
	c.SetDeadline(time.Now().Add(timeout))
	if err := echo(c, r); err != nil {
		c.Close()
		return nil, err
	}
	if br != nil && br.Buffered() > 0 {
		c.Close()
		return nil, errors.New("bytes after the echo")
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func echo(w io.Writer, r io.Reader) error {
	out := append([]byte(nil), Message...)
	if err := ws.WriteFrame(w, ws.MaskFrameInPlace(ws.NewBinaryFrame(out))); err != nil {
		return err
	}
	h, err := ws.ReadHeader(r)
	if err != nil {
		return err
	}
	if h.OpCode != ws.OpBinary || !h.Fin || h.Length != int64(len(Message)) {
		return fmt.Errorf("echo: opcode %v fin %v length %d, want a final binary frame of %d bytes", h.OpCode, h.Fin, h.Length, len(Message))
	}
	in := make([]byte, h.Length)
	if _, err := io.ReadFull(r, in); err != nil {
		return err
	}
	if h.Masked {
		ws.Cipher(in, h.Mask, 0)
	}
	if !bytes.Equal(in, Message) {
		return fmt.Errorf("echo: got %q, want %q", in, Message)
	}
	return nil
}

// Alive reports whether the server still keeps c open: a short read then
// times out, where a closed connection reads EOF or an error at once. It
// sets and leaves a read deadline on c.
func Alive(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
