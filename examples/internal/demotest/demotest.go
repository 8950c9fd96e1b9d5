// Package demotest runs an example's service in its tests the way its
// main does, until the test ends.
package demotest

import (
	"context"
	"testing"
)

// Run starts run (an example's run function, which calls ready with its
// listening address once it serves) and returns "http://" + that
// address. When the test ends, run's context is canceled and its error,
// if any, fails the test.
func Run(t testing.TB, run func(ctx context.Context, ready func(addr string)) error) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(addr string) { ready <- addr }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return "http://" + addr
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	return ""
}
