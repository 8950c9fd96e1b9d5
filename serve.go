package sluice

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// DefaultShutdownGrace is how long Serve lets in-flight requests finish.
const DefaultShutdownGrace = 10 * time.Second

// HTTPServer is a server Serve can run: *Server and *http.Server are.
type HTTPServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Serve runs srv on ln until ctx is done, then shuts down gracefully: the
// listener closes, idle connections close, in-flight requests get grace
// (DefaultShutdownGrace if zero) to finish, and the tunnels of the Proxy
// that srv serves (WebSockets, which http.Server.Shutdown does not see,
// since they are hijacked) end with close 1001.
//
// The Proxy is found in srv's handler (Server.Handler or http.Server's
// Handler): the handler itself, or what its Unwrap() http.Handler method
// leads to, through any number of wrappers. A handler that hides its Proxy
// otherwise should call Proxy.Shutdown itself.
//
// Serve returns nil after a shutdown asked for by ctx in which every
// request finished within grace, context.DeadlineExceeded when grace
// ended first (the remaining connections and tunnels are then closed), or
// the error that stopped the server.
func Serve(ctx context.Context, srv HTTPServer, ln net.Listener, grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	done := make(chan error, 1)
	p := proxyOf(srv)
	if p != nil {
		go func() { done <- p.Shutdown(shutdownCtx) }()
	}
	err := srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		if c, ok := srv.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	}
	if p != nil {
		if perr := <-done; err == nil {
			err = perr
		}
	}
	<-errc // Serve has returned ErrServerClosed
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// proxyOf returns the Proxy srv serves, if its handler is one or wraps
// one with Unwrap.
func proxyOf(srv HTTPServer) *Proxy {
	var h http.Handler
	switch s := srv.(type) {
	case *Server:
		h = s.Handler
	case *http.Server:
		h = s.Handler
	}
	for i := 0; h != nil && i < 32; i++ {
		switch v := h.(type) {
		case *Proxy:
			return v
		case interface{ Unwrap() http.Handler }:
			h = v.Unwrap()
		default:
			return nil
		}
	}
	return nil
}
