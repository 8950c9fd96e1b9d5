package h1server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

var hundred = strings.Repeat("x", 100)

// smallHandler answers like the shared benchmark's upstream: 100 bytes.
var smallHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "100")
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, hundred)
})

// benchKeepAlive measures sequential GETs on one keep-alive connection,
// server and client included (the client reads lines and 100 bytes, and
// allocates nothing).
func benchKeepAlive(b *testing.B, serve func(net.Listener)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
	body := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
		}
		if _, err := io.ReadFull(br, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkServerKeepAlive(b *testing.B) {
	s := &Server{Handler: smallHandler}
	defer s.Close()
	benchKeepAlive(b, func(ln net.Listener) { s.Serve(ln) })
}

func BenchmarkNetHTTPServerKeepAlive(b *testing.B) {
	s := &http.Server{Handler: smallHandler}
	defer s.Close()
	benchKeepAlive(b, func(ln net.Listener) { s.Serve(ln) })
}

var benchHead = []byte("GET /search?q=sluice HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
	"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en\r\nAccept-Encoding: gzip, deflate\r\n" +
	"Cookie: session=0123456789abcdef\r\nConnection: keep-alive\r\n\r\n")

// BenchmarkReadRequest parses a browser-like request head, against
// net/http's http.ReadRequest on the same bytes.
func BenchmarkReadRequest(b *testing.B) {
	srv := &Server{Handler: smallHandler}
	rd := bytes.NewReader(benchHead)
	c := newConn(srv, &bytesConn{r: rd})
	b.ReportAllocs()
	for range b.N {
		rd.Reset(benchHead)
		c.acquireReader()
		if _, _, err := c.readRequest(context.Background()); err != nil {
			b.Fatal(err)
		}
		c.releaseBuffers()
	}
}

func BenchmarkNetHTTPReadRequest(b *testing.B) {
	rd := bytes.NewReader(benchHead)
	br := bufio.NewReader(rd)
	b.ReportAllocs()
	for range b.N {
		rd.Reset(benchHead)
		br.Reset(rd)
		if _, err := http.ReadRequest(br); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerSplice measures a large body of known length moved from
// an upstream socket to the client by ReadFrom (splice(2)), as sluice's
// engine hands it over, with WriteIdleTimeout renewed along the way.
func BenchmarkServerSplice(b *testing.B) {
	const size = 8 << 20
	payload := make([]byte, size)
	src, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	go func() {
		for {
			c, err := src.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					if _, err := c.Write(payload); err != nil {
						return
					}
				}
			}()
		}
	}()
	up, err := net.Dial("tcp", src.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: up, N: size})
	})}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	req := []byte("GET /large HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
		}
		if _, err := io.CopyN(io.Discard, br, size); err != nil {
			b.Fatal(err)
		}
	}
}
