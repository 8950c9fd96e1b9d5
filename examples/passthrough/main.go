// Command passthrough is the starter service of sluice: a transparent
// reverse proxy. With no flags it starts an embedded demo upstream (small
// responses, server-sent events, a large streamed download, an echo of
// uploads) and the proxy in front of it.
//
//	go run ./examples/passthrough
//	go run ./examples/passthrough -listen 127.0.0.1:8080 -upstream http://127.0.0.1:9000
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	upstream := flag.String("upstream", "", "upstream URL (default: an embedded demo upstream)")
	timeout := flag.Duration("timeout", sluice.DefaultResponseHeaderTimeout, "upstream response-header timeout")
	server := flag.String("server", "sluice", `client-side server: "sluice" (sluice.Server) or "net/http" (http.Server)`)
	flag.Parse()
	if *server != "sluice" && *server != "net/http" {
		fmt.Fprintf(os.Stderr, "passthrough: bad -server %q: want sluice or net/http\n", *server)
		os.Exit(2)
	}
	if err := run(*listen, *upstream, *timeout, *server == "net/http"); err != nil {
		fmt.Fprintln(os.Stderr, "passthrough:", err)
		os.Exit(1)
	}
}

func run(listen, upstream string, timeout time.Duration, netHTTP bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return serve(ctx, ln, upstream, timeout, netHTTP)
}

// serve runs the proxy on ln until ctx ends, then shuts down gracefully.
// An empty upstream starts the embedded demo upstream. netHTTP serves with
// net/http's server instead of sluice's.
func serve(ctx context.Context, ln net.Listener, upstream string, timeout time.Duration, netHTTP bool) error {
	defer ln.Close()
	if upstream == "" {
		demo, err := startDemo()
		if err != nil {
			return err
		}
		defer demo.Close()
		upstream = "http://" + demo.Addr
	}
	target, err := url.Parse(upstream)
	if err != nil || target.Host == "" || (target.Scheme != "http" && target.Scheme != "https") {
		return fmt.Errorf("bad -upstream %q: want a URL like http://127.0.0.1:9000", upstream)
	}
	proxy := &sluice.Proxy{
		Director:              sluice.SingleHost(target, false),
		ResponseHeaderTimeout: timeout,
	}
	defer proxy.CloseIdleConnections()
	var srv sluice.HTTPServer = &sluice.Server{Handler: proxy}
	if netHTTP {
		srv = &http.Server{Handler: proxy, ReadHeaderTimeout: sluice.DefaultReadHeaderTimeout}
	}
	slog.Info("passthrough: proxying", "url", "http://"+ln.Addr().String()+"/", "upstream", upstream)

	return sluice.Serve(ctx, srv, ln, 0, proxy)
}
