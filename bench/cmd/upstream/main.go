// Command upstream is the origin server of the sluice benchmark (routes in
// package origin). With -tls-cert and -tls-key it serves HTTPS instead
// (HTTP/2 and HTTP/1.1 by ALPN), TLS 1.3 only, without session tickets:
// the benchmark starts such an instance as the "direct" row of its TLS
// scenarios when --small-upstream is go.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/bench/internal/origin"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19080", "address to listen on (loopback)")
	wsIdle := flag.Duration("ws-idle", 5*time.Minute, "close a WebSocket that received nothing for this long")
	cert := flag.String("tls-cert", "", "serve HTTPS with this PEM certificate (with -tls-key)")
	key := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	if (*cert == "") != (*key == "") {
		log.Fatal("upstream: -tls-cert and -tls-key go together")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal("upstream: ", err)
	}
	srv := &http.Server{
		Handler:           origin.Handler(origin.Config{WSIdle: *wsIdle}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       10 * time.Minute,
		ErrorLog:          log.New(os.Stderr, "upstream: ", log.LstdFlags),
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	log.Printf("upstream: listening on %s (TLS %v)", ln.Addr(), *cert != "")
	if *cert != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
		err = srv.ServeTLS(ln, *cert, *key)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal("upstream: ", err)
	}
}
