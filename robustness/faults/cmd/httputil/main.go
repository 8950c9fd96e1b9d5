// Command httputil is the standard library's reverse proxy as the fault
// matrix runs it: httputil.ReverseProxy with its bounds set as a user
// would (a response-header timeout, a request-head timeout), flushing
// at once (event streams, gRPC), serving HTTP/1.1 and h2c on one
// listener and sending gRPC (HTTP/2 requests of type application/grpc)
// to an h2c upstream of its own. GET /goroutines on the -admin listener
// tells its goroutine count.
//
// httputil.ReverseProxy has no idle bound on a body: an upstream that
// stops in the middle of one holds the exchange until the client leaves.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19090", "address to listen on")
	upstream := flag.String("upstream", "http://127.0.0.1:19080", "upstream base URL (HTTP/1.1)")
	grpcUpstream := flag.String("grpc-upstream", "", "base URL of the h2c upstream of gRPC requests (default: -upstream)")
	admin := flag.String("admin", "", "address of the admin listener (GET /goroutines); empty: none")
	timeout := flag.Duration("timeout", 3*time.Second, "response-header, dial and request-head timeout")
	flag.Parse()
	if *grpcUpstream == "" {
		*grpcUpstream = *upstream
	}
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		log.Fatalf("httputil: bad -upstream %q", *upstream)
	}
	gtarget, err := url.Parse(*grpcUpstream)
	if err != nil || gtarget.Host == "" {
		log.Fatalf("httputil: bad -grpc-upstream %q", *grpcUpstream)
	}
	logger := log.New(os.Stderr, "httputil: ", log.LstdFlags)

	dial := (&net.Dialer{Timeout: *timeout}).DialContext
	h1 := &http.Transport{DialContext: dial, ResponseHeaderTimeout: *timeout, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	h2c := &http.Transport{DialContext: dial, ResponseHeaderTimeout: *timeout, DisableCompression: true,
		Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	isGRPC := func(r *http.Request) bool {
		return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if isGRPC(pr.In) {
				pr.SetURL(gtarget)
			} else {
				pr.SetURL(target)
			}
			pr.Out.Host = pr.In.Host
		},
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			if isGRPC(r) {
				return h2c.RoundTrip(r)
			}
			return h1.RoundTrip(r)
		}),
		FlushInterval: -1,
		ErrorLog:      logger,
	}

	if *admin != "" {
		aln, err := net.Listen("tcp", *admin)
		if err != nil {
			logger.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /goroutines", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, runtime.NumGoroutine())
		})
		go http.Serve(aln, mux)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Fatal(err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: *timeout, IdleTimeout: time.Minute, Protocols: protocols, ErrorLog: logger}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	logger.Printf("listening on %s, upstream %s, gRPC upstream %s", ln.Addr(), target, gtarget)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Fatal(err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
