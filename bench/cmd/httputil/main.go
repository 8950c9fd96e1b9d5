// Command httputil is the Go baseline of the sluice benchmark: the
// standard library's httputil.ReverseProxy over http.DefaultTransport,
// changed in one way only: the idle pool keeps up to 1024 connections to
// the upstream (the default of 2 per host would make it open and close a
// connection for most requests under the benchmark's concurrency, which
// measures connection churn, not proxying).
//
// With -tls-cert and -tls-key it serves HTTPS (http.Server.ServeTLS:
// HTTP/2 and HTTP/1.1 by ALPN), TLS 1.3 only, no session tickets, like
// every peer in the TLS scenarios.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19090", "address to listen on")
	upstream := flag.String("upstream", "http://127.0.0.1:19080", "upstream base URL")
	idle := flag.Int("max-idle-per-host", 1024, "Transport.MaxIdleConnsPerHost (and MaxIdleConns)")
	cert := flag.String("tls-cert", "", "serve HTTPS with this PEM certificate (with -tls-key)")
	key := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	if (*cert == "") != (*key == "") {
		log.Fatal("httputil: -tls-cert and -tls-key go together")
	}
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		log.Fatalf("httputil: bad -upstream %q", *upstream)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = *idle
	tr.MaxIdleConns = max(tr.MaxIdleConns, *idle)
	logger := log.New(os.Stderr, "httputil: ", log.LstdFlags)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	rp.ErrorLog = logger

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second, ErrorLog: logger}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	logger.Printf("listening on %s (TLS %v), upstream %s", ln.Addr(), *cert != "", target)
	if *cert != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
		err = srv.ServeTLS(ln, *cert, *key)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Fatal(err)
	}
}
