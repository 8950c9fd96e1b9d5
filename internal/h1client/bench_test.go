package h1client

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1wire"
)

// replayConn is a net.Conn that swallows writes and replays one
// response forever, so the benchmarks measure parsing and formatting
// only.
type replayConn struct {
	net.Conn
	resp []byte
	r    *bytes.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		c.r.Reset(c.resp)
	}
	return c.r.Read(p)
}

func (c *replayConn) Write(p []byte) (int, error) { return len(p), nil }

// benchConn returns a connection that replays resp. Its reuse checks
// look at a real loopback socket that stays empty, so that the
// benchmarks count their cost (a system call each).
func benchConn(b *testing.B, resp string) *conn {
	rc := &replayConn{resp: []byte(resp), r: bytes.NewReader(nil)}
	pc := &conn{client: &Client{}, pool: &hostPool{}, nc: rc, probe: newProber(quietConn(b))}
	pc.lr = h1wire.LimitReader{R: rc, N: -1, TooLarge: errHeaderTooLarge}
	pc.acquireBuffers()
	return pc
}

// quietConn returns a loopback TCP connection whose peer never writes.
func quietConn(b *testing.B) net.Conn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		peer.Close()
	})
	return c
}

// drainConn returns a loopback TCP connection whose peer reads and drops
// everything.
func drainConn(b *testing.B) *net.TCPConn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, peer)
	}()
	b.Cleanup(func() {
		c.Close()
		<-done
		peer.Close()
	})
	return c.(*net.TCPConn)
}

// BenchmarkReuseCheck is the look at a pooled connection before reuse
// (and again, with the buffered reader's count, when it goes back).
func BenchmarkReuseCheck(b *testing.B) {
	pc := &conn{client: &Client{}, pool: &hostPool{}, probe: newProber(quietConn(b))}
	b.ReportAllocs()
	for b.Loop() {
		if !pc.reusable("while idle", true) {
			b.Fatal("quiet connection not reusable")
		}
	}
}

// BenchmarkWriteHead formats a typical proxied request head.
func BenchmarkWriteHead(b *testing.B) {
	pc := benchConn(b, "")
	req, _ := http.NewRequest("GET", "http://upstream.test/api/v1/items?page=2&sort=name", nil)
	req.Header = http.Header{
		"User-Agent":        {"Mozilla/5.0"},
		"Accept":            {"*/*"},
		"Accept-Encoding":   {"gzip, br"},
		"Cookie":            {"session=abcdef0123456789"},
		"X-Forwarded-For":   {"192.0.2.1"},
		"X-Forwarded-Host":  {"app.example.com"},
		"X-Forwarded-Proto": {"https"},
		"Forwarded":         {"for=192.0.2.1;host=app.example.com;proto=https"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := pc.writeHead(req, false); err != nil {
			b.Fatal(err)
		}
		pc.bw.Reset(io.Discard)
	}
}

// BenchmarkReadResponse parses a typical response head and reads its
// small body.
func BenchmarkReadResponse(b *testing.B) {
	resp := "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 100\r\n" +
		"Date: Thu, 26 Nov 2026 00:00:00 GMT\r\nCache-Control: no-cache\r\nEtag: \"abc\"\r\n\r\n" + strings.Repeat("x", 100)
	pc := benchConn(b, resp)
	req, _ := http.NewRequest("GET", "http://upstream.test/", nil)
	buf := make([]byte, 512)
	b.ReportAllocs()
	b.Cleanup(pc.client.CloseIdleConnections)
	for b.Loop() {
		res, err := pc.readResponse(req, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(res.Body, buf[:100]); err != nil {
			b.Fatal(err)
		}
		// The end of the body pooled the connection: take it back.
		pc.pool.idle = pc.pool.idle[:0]
		pc.acquireBuffers()
	}
}

// BenchmarkChunkedBody reads a 64 KiB chunked body.
func BenchmarkChunkedBody(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := 0; i < 16; i++ {
		sb.WriteString("1000\r\n" + strings.Repeat("y", 4096) + "\r\n")
	}
	sb.WriteString("0\r\n\r\n")
	pc := benchConn(b, sb.String())
	req, _ := http.NewRequest("GET", "http://upstream.test/", nil)
	buf := make([]byte, 32<<10)
	b.SetBytes(64 << 10)
	b.ReportAllocs()
	b.Cleanup(pc.client.CloseIdleConnections)
	for b.Loop() {
		res, err := pc.readResponse(req, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{res.Body}, buf); err != nil {
			b.Fatal(err)
		}
		pc.pool.idle = pc.pool.idle[:0]
		pc.acquireBuffers()
	}
}

// BenchmarkSpliceBody moves a 4 MiB body from a loopback upstream to a
// loopback TCP sink through Body.WriteTo (splice on Linux), with the
// read idle bound (the body handed over in batches of what the socket
// holds) and without it (one ReadFrom).
func BenchmarkSpliceBody(b *testing.B) {
	const size = 4 << 20
	body := make([]byte, size)
	head := []byte("HTTP/1.1 200 OK\r\nContent-Length: " + itoa(size) + "\r\n\r\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					bufs := net.Buffers{head, body}
					if _, err := bufs.WriteTo(c); err != nil {
						return
					}
				}
			}()
		}
	}()
	for _, tt := range []struct {
		name string
		idle time.Duration
	}{{"bound", 0}, {"unbounded", -1}} {
		b.Run(tt.name, func(b *testing.B) {
			// Each its own connections, warmed up (TCP grows its
			// buffers over the first megabytes) before the clock runs.
			sink := drainConn(b)
			c := &Client{ReadIdleTimeout: tt.idle}
			b.Cleanup(c.CloseIdleConnections)
			req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
			get := func() {
				res, err := c.Do(req, nil)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := res.Body.(io.WriterTo).WriteTo(sink); err != nil || n != size {
					b.Fatal(n, err)
				}
			}
			for range 4 {
				get()
			}
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				get()
			}
		})
	}
}
