//go:build !linux

package soak

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// procAttr: the proxy process is killed by the soak on every return path,
// but not if the soak itself is killed (Pdeathsig is Linux's). The soak
// reads /proc and runs on Linux only; this file keeps the package
// building elsewhere.
func procAttr() *syscall.SysProcAttr { return nil }

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
