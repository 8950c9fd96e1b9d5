// Command ws-filter is a WebSocket filtering proxy built with sluice: it
// relays a chat at message level, drops the messages that match a
// pattern, tags the others and ends sessions after a maximum time. With no
// flags it starts an embedded chat upstream and the proxy in front of it;
// open the printed URL in two browser tabs.
//
//	go run ./examples/ws-filter
//	go run ./examples/ws-filter -drop '(?i)casino' -max-session 1m -upstream http://127.0.0.1:9000
//	go run ./examples/ws-filter -metrics 127.0.0.1:9464   # sessions open: sluice_active_tunnels at /metrics
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
	"github.com/sluiceproxy/sluice/wsmsg"
)

// config is what the flags set.
type config struct {
	Drop       *regexp.Regexp // messages to the upstream that match are dropped
	Tag        string         // prefix added to the other messages to the upstream
	MaxSession time.Duration  // sessions end with close 1008 after this long
	Ping       time.Duration  // proxy pings to keep idle connections open
	Metrics    string         // address serving /metrics; "" for none
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	upstream := flag.String("upstream", "", "upstream URL (default: an embedded chat upstream)")
	drop := flag.String("drop", `(?i)\b(spam|password)\b`, "regular expression of messages to drop")
	tag := flag.String("tag", "[checked] ", "prefix added to the messages that pass")
	maxSession := flag.Duration("max-session", 10*time.Minute, "maximum WebSocket session time")
	metrics := flag.String("metrics", "", telemetry.Usage)
	flag.Parse()
	if err := telemetry.CheckAddr(*metrics); err != nil {
		fmt.Fprintln(os.Stderr, "ws-filter:", err)
		os.Exit(2)
	}
	re, err := regexp.Compile(*drop)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ws-filter: bad -drop:", err)
		os.Exit(2)
	}
	cfg := config{Drop: re, Tag: *tag, MaxSession: *maxSession, Ping: 30 * time.Second, Metrics: *metrics}
	if err := run(*listen, *upstream, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "ws-filter:", err)
		os.Exit(1)
	}
}

// newProxy builds the filtering proxy: every request goes to target;
// WebSocket upgrades on any path are relayed message by message.
func newProxy(target *url.URL, cfg config) *sluice.Proxy {
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	p.Handle("/", &wsmsg.Interceptor{
		MaxSessionTime: cfg.MaxSession,
		PingInterval:   cfg.Ping,
		Compression:    wsmsg.CompressionTerminate,
		OnMessage: func(s *wsmsg.Session, m *wsmsg.Message) error {
			if m.Direction != wsmsg.ToUpstream || m.Type != wsmsg.Text {
				return nil
			}
			if cfg.Drop.Match(m.Data) {
				slog.Info("ws-filter: dropped a message", "client", s.ClientAddr())
				_ = s.Send(wsmsg.ToClient, wsmsg.Text, []byte("[your message was blocked by the proxy]"))
				return wsmsg.ErrDrop
			}
			m.Data = append([]byte(cfg.Tag), m.Data...)
			return nil
		},
	})
	return p
}

func run(listen, upstream string, cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if upstream == "" {
		d, err := startDemo()
		if err != nil {
			return err
		}
		defer d.Close()
		upstream = "http://" + d.Addr
	}
	target, err := url.Parse(upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("bad -upstream %q: want a URL like http://127.0.0.1:9000", upstream)
	}
	proxy := newProxy(target, cfg)
	metrics, err := telemetry.Start(cfg.Metrics, proxy, nil)
	if err != nil {
		return err
	}
	defer metrics.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &sluice.Server{Handler: metrics.Handler}
	slog.Info("ws-filter: open this in two tabs", "url", "http://"+ln.Addr().String()+"/", "upstream", upstream, "metrics", metrics.URL())

	return sluice.Serve(ctx, srv, ln, 0)
}
