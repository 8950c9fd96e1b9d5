package sluice

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// WebSocketConfig configures the tunnels the Proxy makes for upgraded
// connections (WebSocket and other protocols switched to with Upgrade).
type WebSocketConfig struct {
	// IdleTimeout closes a tunnel when neither side sent anything for
	// this long. If zero, tunnels never time out.
	IdleTimeout time.Duration
}

// serveUpgrade forwards an upgrade request and, if the upstream switches
// protocols, tunnels the two connections. A non-101 answer is relayed as a
// normal response.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, pr *ProxyRequest) error {
	if p.shutdown.Load() {
		return &Error{Status: http.StatusServiceUnavailable, Err: errors.New("sluice: shutting down")}
	}
	res, err := pr.RoundTrip()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		defer res.Body.Close()
		return pr.WriteResponse(w, res)
	}
	upstream, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		return fmt.Errorf("%w: 101 response without a connection", errBadResponse)
	}
	if err := checkSwitch(pr, res); err != nil {
		upstream.Close()
		return err
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		return fmt.Errorf("sluice: cannot hijack client connection: %w", err)
	}
	pr.rw.status = http.StatusSwitchingProtocols
	sanitizeResponseHeader(res.Header, pr.upgrade)
	mergeHeader(res.Header, pr.respHeader)
	fmt.Fprintf(brw, "HTTP/1.1 101 %s\r\n", http.StatusText(http.StatusSwitchingProtocols))
	if err := res.Header.Write(brw); err != nil {
		client.Close()
		upstream.Close()
		return &abortError{err}
	}
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		client.Close()
		upstream.Close()
		return &abortError{err}
	}
	// Bytes the client sent right behind its upgrade request sit in the
	// server's read buffer: deliver them first (httputil loses them).
	var fromClient io.Reader = client
	if n := brw.Reader.Buffered(); n > 0 {
		fromClient = io.MultiReader(io.LimitReader(brw.Reader, int64(n)), client)
	}
	t := &tunnel{client: client, upstream: upstream}
	p.conns.add(t)
	defer p.conns.remove(t)
	t.run(fromClient, p.wsConfig().IdleTimeout)
	return nil
}

func (p *Proxy) wsConfig() *WebSocketConfig {
	if p.WebSocket != nil {
		return p.WebSocket
	}
	return &WebSocketConfig{}
}

// checkSwitch validates a 101 answer: the protocol must be the one asked
// for and, for WebSocket, Sec-WebSocket-Accept must match the key
// (RFC 6455 §4.1).
func checkSwitch(pr *ProxyRequest, res *http.Response) error {
	if !strings.EqualFold(strings.TrimSpace(res.Header.Get("Upgrade")), pr.upgrade) {
		return fmt.Errorf("%w: switched to %q, asked for %q", errBadResponse, res.Header.Get("Upgrade"), pr.upgrade)
	}
	if strings.EqualFold(pr.upgrade, "websocket") {
		key := pr.Out.Header.Get("Sec-WebSocket-Key")
		if res.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
			return fmt.Errorf("%w: bad Sec-WebSocket-Accept", errBadResponse)
		}
	}
	return nil
}

func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// tunnel copies bytes both ways between an upgraded client connection and
// its upstream.
type tunnel struct {
	client   net.Conn
	upstream io.ReadWriteCloser
	once     sync.Once
}

func (t *tunnel) close() {
	t.once.Do(func() {
		t.client.Close()
		t.upstream.Close()
	})
}

func (t *tunnel) run(fromClient io.Reader, idle time.Duration) {
	done := make(chan struct{}, 2)
	go func() {
		copyHalf(t.upstream, fromClient)
		closeWrite(t.upstream)
		done <- struct{}{}
	}()
	go func() {
		copyHalf(t.client, t.upstream)
		closeWrite(t.client)
		done <- struct{}{}
	}()
	<-done
	// One direction ended. Give the other a moment to drain its half,
	// then close both so a reset on one side ends the other promptly.
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case <-done:
		t.close()
	case <-timer.C:
		t.close()
		<-done
	}
}

func copyHalf(dst io.Writer, src io.Reader) {
	bp := copyBufferPool.Get().(*[]byte)
	defer copyBufferPool.Put(bp)
	_, _ = io.CopyBuffer(dst, src, *bp)
}

func closeWrite(c any) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// tunnelSet tracks live tunnels for Shutdown.
type tunnelSet struct {
	mu sync.Mutex
	m  map[*tunnel]struct{}
}

func (s *tunnelSet) add(t *tunnel) {
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[*tunnel]struct{})
	}
	s.m[t] = struct{}{}
	s.mu.Unlock()
}

func (s *tunnelSet) remove(t *tunnel) {
	s.mu.Lock()
	delete(s.m, t)
	s.mu.Unlock()
}

// Shutdown stops new upgrades and closes every tunnel. Hijacked
// connections are not seen by http.Server.Shutdown; call Proxy.Shutdown
// from the server's RegisterOnShutdown or right after Server.Shutdown.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.shutdown.Store(true)
	p.conns.mu.Lock()
	tunnels := make([]*tunnel, 0, len(p.conns.m))
	for t := range p.conns.m {
		tunnels = append(tunnels, t)
	}
	p.conns.mu.Unlock()
	for _, t := range tunnels {
		t.close()
	}
	return ctx.Err()
}
