package h1client

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// readerFromRecorder records the reader its ReadFrom gets.
type readerFromRecorder struct {
	strings.Builder
	src   io.Reader
	inner io.Reader // what src reads from, at the time of the call
}

func (r *readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.src == nil {
		r.src = src
		if lr, ok := src.(*io.LimitedReader); ok {
			r.inner = lr.R
		}
	}
	return io.Copy(&r.Builder, src)
}

const unixBodySize = spliceMin + 100<<10

func TestUnixSocket(t *testing.T) {
	leaktest.Check(t)
	path := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int32
	var hosts []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					mu.Lock()
					hosts = append(hosts, req.Host)
					mu.Unlock()
					// Long enough to be spliced (spliceMin).
					body := strings.Repeat("u", unixBodySize)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(unixBodySize)+"\r\n\r\n"+body)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })

	c := &Client{}
	t.Cleanup(c.CloseIdleConnections)
	for i := range 2 {
		req := &http.Request{Method: "GET", URL: &url.URL{Scheme: "unix", Host: path, Path: "/x"}, Host: "localhost", Header: http.Header{}}
		res, err := c.Do(req, nil)
		if err != nil {
			t.Fatal(err)
		}
		var w readerFromRecorder
		n, err := res.Body.(io.WriterTo).WriteTo(&w)
		res.Body.Close()
		if err != nil || n != unixBodySize || w.Len() != unixBodySize {
			t.Fatalf("body: %d bytes, %v", n, err)
		}
		// The body's rest is handed over as the Unix connection itself,
		// which net.TCPConn.ReadFrom splices from.
		if _, ok := w.src.(*io.LimitedReader); !ok {
			t.Fatalf("request %d: ReadFrom got %T, want *io.LimitedReader", i, w.src)
		}
		if _, ok := w.inner.(*net.UnixConn); !ok {
			t.Errorf("request %d: ReadFrom reads from %T, want *net.UnixConn", i, w.inner)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"localhost", "localhost"}, hosts); diff != "" {
		t.Errorf("Host headers (-want +got):\n%s", diff)
	}
	if got := accepts.Load(); got != 1 {
		t.Errorf("%d connections for two requests, want 1 (pooled)", got)
	}

	for _, u := range []*url.URL{{Scheme: "unix", Host: "relative.sock"}, {Scheme: "ftp", Host: "h"}} {
		if _, err := c.Do(&http.Request{Method: "GET", URL: u, Header: http.Header{}}, nil); err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
			t.Errorf("%v: err %v, want unsupported scheme", u, err)
		}
	}
}
