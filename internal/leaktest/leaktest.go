// Package leaktest checks that a test leaves no goroutine behind, in the
// manner of go.uber.org/goleak (not an allowed dependency of sluice).
package leaktest

import (
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Check snapshots the running goroutines and registers a cleanup that
// fails t if, after the test, goroutines started during it are still
// running. Goroutines get up to five seconds to finish: the check polls
// and returns as soon as they are gone, so it never slows a clean test.
//
// Call it first in a test, before starting servers, so that their
// cleanups (registered later) run before the check.
func Check(t testing.TB) {
	t.Helper()
	before := map[string]bool{}
	for _, g := range stacks() {
		before[g.id] = true
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			var leaked []string
			for _, g := range stacks() {
				if !before[g.id] && !ignored(g.stack) {
					leaked = append(leaked, g.stack)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				sort.Strings(leaked)
				t.Errorf("leaktest: %d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

type goroutine struct{ id, stack string }

func stacks() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var gs []goroutine
	for _, s := range strings.Split(string(buf), "\n\n") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		line, _, _ := strings.Cut(s, "\n")
		// "goroutine 123 [running]:"
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		gs = append(gs, goroutine{id: fields[1], stack: s})
	}
	return gs
}

// ignored reports goroutines that belong to the test framework or the
// runtime, not to the code under test.
func ignored(stack string) bool {
	for _, s := range []string{
		"testing.(*T).Run(",
		"testing.runTests",
		"testing.(*M).",
		"testing.runFuzzing",
		"os/signal.",
		"runtime.ensureSigM",
		// The poller of parked idle connections lives as long as the
		// process, like the runtime's own.
		"internal/park.poll(",
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
