package sluice

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// Tests of ProxyRequest.Upgrade, the way an Interceptor takes over an
// upgraded exchange (package wsmsg is built on it).

// upgradeSetup starts a Proxy whose "/" route calls pr.Upgrade with check
// and serve, in front of a raw upstream.
func upgradeSetup(t *testing.T, check func(*http.Response) error, serve func(context.Context, *Upgraded)) (*Proxy, *wstest.Upstream, *httptest.Server) {
	t.Helper()
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	p := &Proxy{Director: &SingleHost{Target: up.URL}, Logger: (&logRecorder{}).logger()}
	p.HandleFunc("/", func(w http.ResponseWriter, pr *ProxyRequest) error {
		return pr.Upgrade(w, check, serve)
	})
	return p, up, newTestProxy(t, p)
}

// TestUpgradeHandOver: serve gets both connections with the bytes that
// came with the upgrade and the 101, check edits the client's 101,
// Shutdown ends serve's context, and the connections are closed when
// serve returns.
func TestUpgradeHandOver(t *testing.T) {
	served := make(chan error, 1)
	check := func(res *http.Response) error {
		res.Header.Set("X-Checked", "yes")
		res.Header.Del("X-Drop")
		return nil
	}
	serve := func(ctx context.Context, u *Upgraded) {
		served <- func() error {
			if u.Response.StatusCode != http.StatusSwitchingProtocols || u.UpstreamConn == nil {
				return errors.New("no 101 or no upstream conn")
			}
			b := make([]byte, 5)
			if _, err := io.ReadFull(u.ClientReader, b); err != nil {
				return err
			}
			if _, err := u.Upstream.Write(b); err != nil {
				return err
			}
			b = make([]byte, 6)
			if _, err := io.ReadFull(u.Upstream, b); err != nil {
				return err
			}
			if _, err := u.Client.Write(b); err != nil {
				return err
			}
			return nil
		}()
		<-ctx.Done()
	}
	p, up, srv := upgradeSetup(t, check, serve)
	up.Respond = func(req *http.Request) string {
		return strings.Replace(wstest.ValidSwitch(req), "\r\n\r\n", "\r\nX-Drop: 1\r\n\r\n", 1)
	}
	up.Extra = []byte("banner")
	c, res := wstest.Dial(t, srv, "", []byte("early"))
	if res.StatusCode != 101 || res.Header.Get("X-Checked") != "yes" || res.Header.Get("X-Drop") != "" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	u := up.Accept()
	mustRead(t, u, "early")
	mustRead(t, c, "banner")
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(wstest.Deadline):
		t.Fatal("serve did not run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wstest.Deadline)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	for _, peer := range []*wstest.Peer{c, u} {
		_ = peer.SetReadDeadline(time.Now().Add(wstest.Deadline))
		if n, err := io.Copy(io.Discard, peer.R); n != 0 || (err != nil && !strings.Contains(err.Error(), "reset")) {
			t.Errorf("after serve returned: %d bytes, %v; want the connection closed", n, err)
		}
	}
}

// TestUpgradeNotTakenOver: a refused upgrade is relayed, a failed check
// is a 502 with the upstream connection closed, and a request that is not
// an upgrade is a 500; serve runs in none of them.
func TestUpgradeNotTakenOver(t *testing.T) {
	tests := []struct {
		name    string
		respond string // "" for a valid 101
		check   error
		header  string // of the client's request; "" for a WebSocket upgrade
		want    int
	}{
		{"refused by the upstream", "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", nil, "", 403},
		{"invalid 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", nil, "", 502},
		{"check fails", "", errors.New("no, thanks"), "", 502},
		{"check chooses the status", "", Errorf(http.StatusTeapot, "teapot"), "", 418},
		{"not an upgrade", "", nil, "Connection: close\r\nUpgrade: websocket\r\n", 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checked := make(chan bool, 1)
			check := func(*http.Response) error { checked <- true; return tt.check }
			serve := func(context.Context, *Upgraded) { t.Error("serve called") }
			_, up, srv := upgradeSetup(t, check, serve)
			if tt.respond != "" {
				up.Respond = func(*http.Request) string { return tt.respond }
			}
			_, res := wstest.Dial(t, srv, tt.header, nil)
			if res.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.want)
			}
			if tt.check != nil {
				u := up.Accept()
				_ = u.SetReadDeadline(time.Now().Add(wstest.Deadline))
				if _, err := u.R.ReadByte(); err != io.EOF {
					t.Errorf("upstream connection after a failed check: %v, want EOF", err)
				}
			}
			if diff := cmp.Diff(tt.respond == "" && tt.header == "", len(checked) == 1); diff != "" {
				t.Errorf("check called (-want +got):\n%s", diff)
			}
		})
	}
}
