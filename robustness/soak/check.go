package soak

import (
	"fmt"
	"time"
)

// The flatness criterion. After warm-up, the samples taken under load are
// cut into three thirds by count; for each resource, the last third's
// maximum must not pass the first third's maximum by more than Growth
// plus the resource's slack:
//
//	max(last third) <= max(first third) * Growth + Slack
//
// Maxima, not means, so that a resource that grows shows even when the
// load (and with it the resources under way) varies from sample to
// sample; the slack absorbs the load's own peaks (a few concurrent 16 MiB
// bodies, a burst of WebSocket sessions) on a small first third.
const Growth = 1.2

// Slack per resource for Flat.
const (
	SlackGoroutines = 50
	SlackFDs        = 50
	SlackRSSKiB     = 16 << 10
)

// After the load, once every target is up again, the clients' idle
// connections are closed and the proxy is asked to drop what it keeps for
// reuse (its idle upstream connections, and the splice pipes Go pools),
// the proxy's goroutines and descriptors must come back to their baseline
// (measured the same way before the load) within SettleTimeout, give or
// take the tolerance: the pools' health checks run on, with one
// connection per target that may be between two checks. (The baseline is
// taken after a request over each protocol, so that the parts of the
// server started on first use, HTTP/2 and the parking of idle
// connections with its epoll descriptor, are in it.)
const (
	ToleranceGoroutines = 3
	ToleranceFDs        = 3
	SettleTimeout       = 30 * time.Second
)

// Flat checks samples against the flatness criterion, ignoring those
// taken before warmup or without load. It returns one error per resource
// that grew, and an error if there are too few samples to judge.
func Flat(samples []Sample, warmup time.Duration) []error {
	var s []Sample
	for _, x := range samples {
		if x.Load && x.Elapsed >= warmup {
			s = append(s, x)
		}
	}
	if len(s) < 6 {
		return []error{fmt.Errorf("flatness: %d samples under load after the %v warm-up, want at least 6", len(s), warmup)}
	}
	third := len(s) / 3
	first, last := s[:third], s[len(s)-third:]
	var errs []error
	for _, m := range []struct {
		name  string
		slack float64
		get   func(Sample) float64
	}{
		{"goroutines", SlackGoroutines, func(x Sample) float64 { return float64(x.Goroutines) }},
		{"descriptors", SlackFDs, func(x Sample) float64 { return float64(x.FDs) }},
		{"RSS (KiB)", SlackRSSKiB, func(x Sample) float64 { return float64(x.RSSKiB) }},
	} {
		a, c := maxOf(first, m.get), maxOf(last, m.get)
		if limit := a*Growth + m.slack; c > limit {
			errs = append(errs, fmt.Errorf("%s grew: last third's max %.0f > first third's max %.0f × %.1f + %.0f = %.0f",
				m.name, c, a, Growth, m.slack, limit))
		}
	}
	return errs
}

func maxOf(s []Sample, get func(Sample) float64) float64 {
	m := get(s[0])
	for _, x := range s[1:] {
		m = max(m, get(x))
	}
	return m
}
