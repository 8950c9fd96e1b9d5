//go:build linux

package sluice

import (
	"bufio"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice/internal/wsframe"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// BenchmarkWebSocketTunnelCPU measures what the transparent tunnel costs
// the proxy per small-message round trip, like scenario D of the shared
// benchmark: 64 connections, 128-byte messages, request/response echo.
// The clients and the echo upstream run in a child process (this test
// binary, see TestWebSocketLoadHelper), so that the process's own CPU time
// (getrusage) is the proxy's; cpu-ns/op is that time per round trip.
// With one connection every message wakes the proxy; with 64 it handles
// several per wake-up. Run it on one P:
//
//	go test -run '^$' -bench WebSocketTunnelCPU -cpu 1 -count 5
func BenchmarkWebSocketTunnelCPU(b *testing.B) {
	for _, conns := range []int{1, 64} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchTunnelCPU(b, conns, 128) })
	}
}

func benchTunnelCPU(b *testing.B, conns, size int) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestWebSocketLoadHelper$")
	cmd.Env = append(os.Environ(), "SLUICE_WSLOAD_HELPER=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	lines := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		if !lines.Scan() {
			b.Fatalf("load helper: %v", lines.Err())
		}
		line := lines.Text()
		if !strings.HasPrefix(line, prefix) {
			b.Fatalf("load helper said %q, want %s...", line, prefix)
		}
		return strings.TrimPrefix(line, prefix)
	}
	upstream := expect("upstream ")
	p := &Proxy{Director: &SingleHost{Target: &url.URL{Scheme: "http", Host: upstream}}}
	srv := httptest.NewServer(p)
	b.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	fmt.Fprintf(stdin, "dial %s %d %d\n", srv.Listener.Addr(), conns, size)
	expect("ok")
	fmt.Fprintf(stdin, "run %d\n", 20000) // warm up
	expect("ok")
	usage := func() (cpu time.Duration, switches int64) {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw
	}
	b.ResetTimer()
	cpu0, sw0 := usage()
	fmt.Fprintf(stdin, "run %d\n", b.N)
	expect("ok")
	cpu1, sw1 := usage()
	b.StopTimer()
	b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(sw1-sw0)/float64(b.N), "ctxsw/op")
}

// TestWebSocketLoadHelper is the child process of
// BenchmarkWebSocketTunnelCPU: an echo upstream and the WebSocket clients,
// driven by lines on stdin ("dial ADDR CONNS SIZE", "run N"), answered with
// "ok" on stdout.
func TestWebSocketLoadHelper(t *testing.T) {
	if os.Getenv("SLUICE_WSLOAD_HELPER") == "" {
		t.Skip("child process of BenchmarkWebSocketTunnelCPU")
	}
	u := wstest.EchoUpstream(t)
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	say("upstream %s", u.Host)
	type client struct {
		c  io.ReadWriteCloser
		br *bufio.Reader
	}
	var clients []client
	var wire, scratch []byte
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 4 && f[0] == "dial":
			var n, size int
			fmt.Sscan(f[2], &n)
			fmt.Sscan(f[3], &size)
			for range n {
				c, br := wstest.Client(t, f[1])
				defer c.Close()
				clients = append(clients, client{c, br})
			}
			wire = wstest.RawFrame(true, 0, ws.OpBinary, true, make([]byte, size))
			scratch = make([]byte, size)
			say("ok")
		case len(f) == 2 && f[0] == "run":
			var n int64
			fmt.Sscan(f[1], &n)
			var left atomic.Int64
			left.Store(n)
			var wg sync.WaitGroup
			var failed atomic.Value
			for _, cl := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, len(scratch))
					for left.Add(-1) >= 0 {
						if _, err := cl.c.Write(wire); err != nil {
							failed.CompareAndSwap(nil, err)
							return
						}
						h, err := wsframe.ReadHeader(cl.br)
						if err == nil && h.Length != int64(len(buf)) {
							err = fmt.Errorf("echo of %d bytes, want %d", h.Length, len(buf))
						}
						if err == nil {
							_, err = io.ReadFull(cl.br, buf)
						}
						if err != nil {
							failed.CompareAndSwap(nil, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				t.Fatal(err)
			}
			say("ok")
		default:
			t.Fatalf("load helper: bad command %q", in.Text())
		}
	}
}
