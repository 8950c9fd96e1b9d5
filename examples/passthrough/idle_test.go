package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// writeTestCert writes httptest's certificate (for 127.0.0.1) and its key
// to PEM files, and returns them with a pool that trusts the certificate.
func writeTestCert(t testing.TB) (roots *x509.CertPool, certFile, keyFile string) {
	t.Helper()
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	roots = ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	key, err := x509.MarshalPKCS8PrivateKey(ts.TLS.Certificates[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.TLS.Certificates[0].Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return roots, certFile, keyFile
}

// idleMem is what the proxy process reports about its memory, after a
// garbage collection that returned what it could to the OS.
type idleMem struct {
	RSS        int64 // VmRSS, bytes
	Go         int64 // heap in use and goroutine stacks, bytes
	Goroutines int
}

// TestIdleConnectionMemory measures the memory an idle keep-alive client
// connection costs the proxy (this example, in a process of its own, in
// front of an upstream in the test's process): plain HTTP/1.1, HTTP/1.1
// over TLS and HTTP/2 over TLS, behind sluice.Server and http.Server. It
// is a measurement, run only when asked:
//
//	SLUICE_MEASURE_IDLE=1 go test -run IdleConnectionMemory -v ./examples/passthrough
//
// SLUICE_MEASURE_IDLE_CONNS sets the number of connections (2,000). It
// fails if an idle HTTP/1.1 connection over TLS costs sluice.Server as
// much as it costs http.Server.
func TestIdleConnectionMemory(t *testing.T) {
	if os.Getenv("SLUICE_MEASURE_IDLE") != "1" {
		t.Skip("a measurement; run it with SLUICE_MEASURE_IDLE=1")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("SLUICE_MEASURE_IDLE_CONNS")); err == nil && v > 0 {
		n = v
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100))
	}))
	defer upstream.Close()
	roots, certFile, keyFile := writeTestCert(t)

	perConn := map[string]float64{}
	for _, server := range []string{"sluice", "net/http"} {
		for _, mode := range []string{"h1", "h1-tls", "h2-tls"} {
			child := startIdleChild(t, server, mode != "h1", upstream.URL, certFile, keyFile)
			before := child.mem(t)
			conns := openIdle(t, child.addr, mode, roots, n)
			time.Sleep(time.Second) // let the connections settle into their idle state
			after := child.mem(t)
			for _, c := range conns {
				c.Close()
			}
			child.stop()
			rss := float64(after.RSS-before.RSS) / float64(n) / 1024
			perConn[server+" "+mode] = rss
			t.Logf("%-8s %-6s %6.2f KiB/conn RSS, %6.2f KiB/conn Go heap+stacks, %.2f goroutines/conn",
				server, mode, rss, float64(after.Go-before.Go)/float64(n)/1024,
				float64(after.Goroutines-before.Goroutines)/float64(n))
		}
	}
	if s, h := perConn["sluice h1-tls"], perConn["net/http h1-tls"]; s >= h {
		t.Errorf("an idle HTTP/1.1 connection over TLS costs sluice.Server %.2f KiB, http.Server %.2f KiB", s, h)
	}
}

// idleChild is the proxy process of TestIdleConnectionMemory.
type idleChild struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

func startIdleChild(t *testing.T, server string, tlsOn bool, upstream, certFile, keyFile string) *idleChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleChild$")
	cmd.Env = append(os.Environ(), "SLUICE_IDLE_CHILD="+server, "SLUICE_IDLE_UPSTREAM="+upstream)
	if tlsOn {
		cmd.Env = append(cmd.Env, "SLUICE_IDLE_CERT="+certFile, "SLUICE_IDLE_KEY="+keyFile)
	}
	cmd.Stderr = io.Discard
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &idleChild{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(c.stop)
	for c.out.Scan() {
		if addr, ok := strings.CutPrefix(c.out.Text(), "addr "); ok {
			c.addr = addr
			return c
		}
	}
	t.Fatal("the proxy process did not start")
	return nil
}

func (c *idleChild) mem(t *testing.T) idleMem {
	t.Helper()
	io.WriteString(c.in, "mem\n")
	for c.out.Scan() {
		if js, ok := strings.CutPrefix(c.out.Text(), "mem "); ok {
			var m idleMem
			if err := json.Unmarshal([]byte(js), &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatal("the proxy process did not report its memory")
	return idleMem{}
}

func (c *idleChild) stop() {
	if c.in != nil {
		c.in.Close() // the child shuts down when its stdin closes
		c.in = nil
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
	}
}

// TestIdleChild is the proxy process that TestIdleConnectionMemory starts;
// by itself it does nothing.
func TestIdleChild(t *testing.T) {
	server := os.Getenv("SLUICE_IDLE_CHILD")
	if server == "" {
		t.Skip("the proxy process of TestIdleConnectionMemory")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{
		upstream: os.Getenv("SLUICE_IDLE_UPSTREAM"),
		timeout:  5 * time.Second,
		netHTTP:  server == "net/http",
		tlsCert:  os.Getenv("SLUICE_IDLE_CERT"),
		tlsKey:   os.Getenv("SLUICE_IDLE_KEY"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, cfg) }()
	fmt.Println("addr", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "mem" {
			runtime.GC()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b, _ := json.Marshal(idleMem{RSS: vmRSS(), Go: int64(ms.HeapInuse + ms.StackInuse), Goroutines: runtime.NumGoroutine()})
			fmt.Println("mem", string(b))
		}
	}
	cancel()
	<-done
}

// vmRSS returns the resident set size of this process, in bytes.
func vmRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// openIdle opens n connections to addr, each after one GET /small
// answered: plain HTTP/1.1 (mode h1), HTTP/1.1 over TLS (h1-tls) or HTTP/2
// over TLS (h2-tls).
func openIdle(t *testing.T, addr, mode string, roots *x509.CertPool, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := openOne(addr, mode, roots)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		t.Fatalf("opening %s connections: %v", mode, err)
	}
	return conns
}

func openOne(addr, mode string, roots *x509.CertPool) (net.Conn, error) {
	var c net.Conn
	var err error
	switch mode {
	case "h1":
		c, err = net.Dial("tcp", addr)
	case "h1-tls":
		c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	case "h2-tls":
		c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
	}
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if mode == "h2-tls" {
		err = getH2(c)
	} else {
		err = getH1(c)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func getH1(c net.Conn) error {
	io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(res.Body)
	if err == nil && (len(b) != 100 || res.Close || br.Buffered() > 0) {
		err = fmt.Errorf("%s, %d bytes, close %v", res.Status, len(b), res.Close)
	}
	return err
}

func getH2(c net.Conn) error {
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "a"}, {":path", "/small"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	for got := 0; ; {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			got += len(f.Data())
			if f.StreamEnded() {
				if got != 100 {
					return fmt.Errorf("%d bytes", got)
				}
				return nil
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return errors.New("no body")
			}
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			return fmt.Errorf("%v", f)
		}
	}
}
