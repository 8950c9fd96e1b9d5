// Package demo runs the embedded upstreams that let each starter service
// work with no flags: a loopback HTTP server around a handler, and the
// handlers more than one demo serves.
package demo

import (
	"net"
	"net/http"
	"strconv"
	"time"
)

// Server is an embedded upstream on a free loopback port.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	srv  *http.Server
}

// Start serves h on a free port of 127.0.0.1 until Close.
func Start(h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server and closes its connections.
func (s *Server) Close() error { return s.srv.Close() }

// Download streams ?n=BYTES zero bytes with a Content-Length: a body as
// large as asked for, to try streaming through a proxy.
func Download(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want ?n=BYTES", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, 64<<10)
	for n > 0 {
		m := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:m]); err != nil {
			return
		}
		n -= m
	}
}
