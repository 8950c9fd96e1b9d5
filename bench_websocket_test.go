package sluice_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/wsframe"
	"github.com/sluiceproxy/sluice/internal/wstest"
	"github.com/sluiceproxy/sluice/wsmsg"
)

// BenchmarkWebSocketRoundTrip sends a message through the proxy to an
// echo upstream and reads it back: the transparent tunnel, the
// message-level relay of package wsmsg (with an OnMessage handler that
// looks at every message), and httputil.ReverseProxy for reference.
//
//	go test -run '^$' -bench WebSocketRoundTrip -benchmem
func BenchmarkWebSocketRoundTrip(b *testing.B) {
	modes := []struct {
		name    string
		handler func(u *url.URL) (http.Handler, func())
	}{
		{"transparent", func(u *url.URL) (http.Handler, func()) {
			p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u}}
			return p, p.CloseIdleConnections
		}},
		{"frame", func(u *url.URL) (http.Handler, func()) {
			p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u}}
			var n int
			p.Handle("/", &wsmsg.Interceptor{OnMessage: func(s *wsmsg.Session, m *wsmsg.Message) error {
				n += len(m.Data)
				return nil
			}})
			return p, p.CloseIdleConnections
		}},
		{"httputil", func(u *url.URL) (http.Handler, func()) {
			return httputil.NewSingleHostReverseProxy(u), func() {}
		}},
	}
	for _, size := range []int{16, 4096, 64 << 10} {
		for _, m := range modes {
			b.Run(m.name+"/"+strconv.Itoa(size), func(b *testing.B) {
				h, closeIdle := m.handler(wstest.EchoUpstream(b))
				srv := httptest.NewServer(h)
				c, br := wstest.Client(b, srv.Listener.Addr().String())
				b.Cleanup(func() {
					c.Close()
					srv.Close()
					closeIdle()
				})
				msg := make([]byte, size)
				wire := wstest.RawFrame(true, 0, ws.OpBinary, true, msg)
				scratch := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := c.Write(wire); err != nil {
						b.Fatal(err)
					}
					h, err := wsframe.ReadHeader(br)
					if err != nil || h.Length != int64(size) {
						b.Fatalf("echo: %+v %v", h, err)
					}
					if _, err := io.ReadFull(br, scratch); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkWebSocketIdle opens idle tunnels and reports what each costs
// the process: heap and stack bytes and goroutines (the peers' own
// connections are included, so the figures are upper bounds).
//
//	go test -run '^$' -bench WebSocketIdle -benchtime 1x
func BenchmarkWebSocketIdle(b *testing.B) {
	const n = 500
	for _, mode := range []string{"transparent", "frame"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				u, peers := idleUpstream(b)
				p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u}}
				if mode == "frame" {
					p.Handle("/", &wsmsg.Interceptor{})
				}
				srv := httptest.NewServer(p)
				before := idleSnapshot()
				conns := make([]net.Conn, 0, n)
				for range n {
					c, _ := wstest.Client(b, srv.Listener.Addr().String())
					conns = append(conns, c)
				}
				settle()
				after := idleSnapshot()
				b.ReportMetric(float64(after.mem-before.mem)/n, "bytes/tunnel")
				b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/tunnel")
				for _, c := range conns {
					c.Close()
				}
				for _, c := range peers() {
					c.Close()
				}
				srv.Close()
				p.CloseIdleConnections()
			}
		})
	}
}

// idleUpstream accepts WebSocket handshakes and keeps the connections
// without a goroutine or buffer of its own, so that the idle benchmark
// measures the proxy.
func idleUpstream(tb testing.TB) (*url.URL, func() []net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReaderSize(c, 1024))
			if err == nil {
				_, err = io.WriteString(c, wstest.ValidSwitch(req))
			}
			if err != nil {
				c.Close()
				continue
			}
			ch <- c
		}
	}()
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}, func() []net.Conn {
		var all []net.Conn
		for {
			select {
			case c := <-ch:
				all = append(all, c)
			default:
				return all
			}
		}
	}
}

// settle waits until the number of goroutines stops changing (the
// proxy starts a tunnel's second goroutine after the client got its 101).
func settle() {
	last, stable := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(5 * time.Second); stable < 5 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if n := runtime.NumGoroutine(); n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
}

type snapshot struct {
	mem        uint64
	goroutines int
}

func idleSnapshot() snapshot {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return snapshot{mem: ms.HeapInuse + ms.StackInuse, goroutines: runtime.NumGoroutine()}
}
