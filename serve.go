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

// Serve runs srv on ln until ctx is done, then shuts down gracefully:
// the listener closes, idle connections close, in-flight requests get
// grace (DefaultShutdownGrace if zero) to finish, and the tunnels of each
// Proxy in proxies (WebSockets, which http.Server.Shutdown does not see,
// since they are hijacked) end with close 1001. It returns nil after a
// shutdown asked for by ctx, or the error that stopped the server.
func Serve(ctx context.Context, srv HTTPServer, ln net.Listener, grace time.Duration, proxies ...*Proxy) error {
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
	done := make(chan error, len(proxies))
	for _, p := range proxies {
		go func() { done <- p.Shutdown(shutdownCtx) }()
	}
	err := srv.Shutdown(shutdownCtx)
	for range proxies {
		<-done
	}
	<-errc // Serve has returned ErrServerClosed
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
