package h1server

import (
	"bufio"
	"io"
	"net"
	"net/http"
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
