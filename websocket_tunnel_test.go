package sluice

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice/internal/wsframe"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// Tests of the tunnel's read loop: where the pumps read their sockets
// directly (readRaw, Linux), a message followed at once by the sender's
// FIN, a pump blocked in a write while the tunnel is killed, and activity
// that keeps an idle timeout from firing.

// TestWebSocketMessageThenFIN: a peer that sends its last bytes and
// half-closes right away (often one segment, or two that the poller
// reports as one event) must see both delivered: the bytes, then EOF.
func TestWebSocketMessageThenFIN(t *testing.T) {
	_, up, srv := transparentSetup(t)
	for i := range 50 {
		c, _ := wstest.Dial(t, srv, "", nil)
		u := up.Accept()
		// One exchange each way first, so that both pumps have made a
		// short read and wait in their steady state.
		c.Send(t, []byte("ping"))
		mustRead(t, u, "ping")
		u.Send(t, []byte("pong"))
		mustRead(t, c, "pong")

		last := bytes.Repeat([]byte{byte(i)}, 1+i*37)
		for _, dir := range []struct {
			from, to *wstest.Peer
		}{{c, u}, {u, c}} {
			if _, err := dir.from.Write(last); err != nil {
				t.Fatal(err)
			}
			if err := dir.from.Conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = dir.to.SetReadDeadline(time.Now().Add(wstest.Deadline))
			got, err := io.ReadAll(dir.to.R)
			if err != nil || !bytes.Equal(got, last) {
				t.Fatalf("round %d: read %d bytes, %v; want %d bytes then EOF", i, len(got), err, len(last))
			}
		}
		c.Close()
		u.Close()
	}
}

func mustRead(t *testing.T, p *wstest.Peer, want string) {
	t.Helper()
	_ = p.SetReadDeadline(time.Now().Add(wstest.Deadline))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(p.R, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// TestWebSocketKillWhileWriteBlocked: a pump blocked writing to a peer
// that does not read (while it holds the socket it reads) must not keep
// the tunnel from being closed when the shutdown grace ends.
func TestWebSocketKillWhileWriteBlocked(t *testing.T) {
	for _, stalled := range []string{"upstream", "client"} {
		t.Run(stalled+" does not read", func(t *testing.T) {
			p, up, srv := transparentSetup(t)
			c, _ := wstest.Dial(t, srv, "", nil)
			u := up.Accept()
			sender := c
			if stalled == "client" {
				sender = u
			}
			// One small message, so that the pump reads directly, then
			// one frame too large for the socket buffers: the pump blocks
			// in its write in the middle of it.
			sender.Send(t, []byte("x"))
			if stalled == "client" {
				mustRead(t, c, "x")
			} else {
				mustRead(t, u, "x")
			}
			big := wstest.RawFrame(true, 0, ws.OpBinary, sender == c, make([]byte, 64<<20))
			go func() { _, _ = sender.Write(big) }()
			time.Sleep(100 * time.Millisecond)

			ctx, cancel := context.WithTimeout(context.Background(), 3*wsframe.CloseGrace)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Shutdown(ctx) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Shutdown: %v; want the tunnel closed after the grace period", err)
				}
			case <-time.After(wstest.Deadline):
				t.Fatal("Shutdown hangs: the tunnel was never closed")
			}
			c.Close()
			u.Close()
		})
	}
}

// TestWebSocketIdleTimeoutActivity: traffic in either direction keeps a
// tunnel open past its idle timeout; silence closes it.
func TestWebSocketIdleTimeoutActivity(t *testing.T) {
	p, up, srv := transparentSetup(t)
	// Long enough that a loaded machine's scheduling delays between two
	// messages stay well under it.
	const idle = time.Second
	p.WebSocket = &WebSocketConfig{IdleTimeout: idle}
	c, _ := wstest.Dial(t, srv, "", nil)
	u := up.Accept()
	start, last := time.Now(), time.Now()
	for i := 0; time.Since(start) < 3*idle; i++ {
		msg := fmt.Sprint("message ", i)
		// Activity is when the proxy reads the message, after it was
		// sent: the tunnel may close idle after the send, never before.
		last = time.Now()
		if i%2 == 0 {
			c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte(msg)))
			if f := u.ReadFrame(t); string(f.Data) != msg {
				t.Fatalf("upstream got %v", f)
			}
		} else {
			u.Send(t, wstest.RawFrame(true, 0, ws.OpText, false, []byte(msg)))
			if f := c.ReadFrame(t); string(f.Data) != msg {
				t.Fatalf("client got %v", f)
			}
		}
		time.Sleep(idle / 10)
	}
	code, _ := c.ReadClose(t)
	if code != ws.StatusGoingAway {
		t.Errorf("close code %d, want 1001", code)
	}
	if waited := time.Since(last); waited < idle {
		t.Errorf("closed %v after the last message, want at least %v", waited, idle)
	}
	if code, _ := u.ReadClose(t); code != ws.StatusGoingAway {
		t.Errorf("upstream close code %d, want 1001", code)
	}
}

// TestWebSocketShutdownAfterTraffic: like TestWebSocketShutdownMidFrame,
// but with both directions in their steady state (reading directly where
// they can) when Shutdown comes, the client's frame half sent.
func TestWebSocketShutdownAfterTraffic(t *testing.T) {
	p, up, srv := transparentSetup(t)
	c, _ := wstest.Dial(t, srv, "", nil)
	u := up.Accept()
	for i := range 3 {
		msg := fmt.Sprint("message ", i)
		c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte(msg)))
		if f := u.ReadFrame(t); string(f.Data) != msg {
			t.Fatalf("upstream got %v", f)
		}
		u.Send(t, wstest.RawFrame(true, 0, ws.OpText, false, []byte(msg)))
		if f := c.ReadFrame(t); string(f.Data) != msg {
			t.Fatalf("client got %v", f)
		}
	}
	whole := wstest.RawFrame(true, 0, ws.OpBinary, true, []byte("0123456789"))
	c.Send(t, whole[:9]) // header, mask and 3 payload bytes
	if _, err := io.ReadFull(u.R, make([]byte, 9)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	// The upstream side is at a boundary: the client gets its close now.
	if code, masked := c.ReadClose(t); code != ws.StatusGoingAway || masked {
		t.Errorf("client got close %d masked=%v", code, masked)
	}
	c.Send(t, whole[9:])
	rest := make([]byte, len(whole)-9)
	if _, err := io.ReadFull(u.R, rest); err != nil || !bytes.Equal(rest, whole[9:]) {
		t.Fatalf("upstream got %q, %v", rest, err)
	}
	if code, masked := u.ReadClose(t); code != ws.StatusGoingAway || !masked {
		t.Errorf("upstream got close %d masked=%v", code, masked)
	}
	c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1001, "")))
	u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1001, "")))
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(wstest.Deadline):
		t.Fatal("Shutdown hangs")
	}
	for _, peer := range []*wstest.Peer{c, u} {
		if _, err := peer.TryReadFrame(); err != io.EOF {
			t.Errorf("after close handshake: %v, want EOF", err)
		}
	}
}
