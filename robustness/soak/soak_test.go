package soak

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	ProxyMain() // the test binary is the proxy process of the runs below
	os.Exit(m.Run())
}

// series returns samples under load, one a second, with the resources
// f gives for sample i.
func series(n int, f func(i int) (goroutines, fds int, rssKiB int64)) []Sample {
	s := make([]Sample, n)
	for i := range s {
		g, fd, rss := f(i)
		s[i] = Sample{Elapsed: time.Duration(i) * time.Second, Load: true, Goroutines: g, FDs: fd, RSSKiB: rss}
	}
	return s
}

func TestFlat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []Sample
		warmup  time.Duration
		want    []string // substrings of the errors, in order
	}{{
		name:    "flat with noise",
		samples: series(60, func(i int) (int, int, int64) { return 50 + i%7*5, 40 + i%5*4, 30<<10 + int64(i%3)<<10 }),
		warmup:  10 * time.Second,
	}, {
		name: "high start during warm-up is ignored",
		samples: series(60, func(i int) (int, int, int64) {
			if i < 5 {
				return 10, 10, 1 << 10
			}
			return 60, 50, 30 << 10
		}),
		warmup: 10 * time.Second,
	}, {
		name:    "goroutine leak",
		samples: series(60, func(i int) (int, int, int64) { return 50 + 3*i, 40, 30 << 10 }),
		warmup:  10 * time.Second,
		want:    []string{"goroutines grew"},
	}, {
		name:    "descriptor and memory leak",
		samples: series(60, func(i int) (int, int, int64) { return 50, 40 + 4*i, 30<<10 + int64(i)<<10 }),
		warmup:  10 * time.Second,
		want:    []string{"descriptors grew", "RSS (KiB) grew"},
	}, {
		name:    "samples after the load are not judged",
		samples: append(series(30, func(int) (int, int, int64) { return 50, 40, 30 << 10 }), Sample{Elapsed: 31 * time.Second, Goroutines: 1000}),
		warmup:  5 * time.Second,
	}, {
		name:    "too few samples",
		samples: series(8, func(int) (int, int, int64) { return 50, 40, 30 << 10 }),
		warmup:  5 * time.Second,
		want:    []string{"samples under load"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			errs := Flat(tc.samples, tc.warmup)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors %v, want %d matching %q", errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.want[i]) {
					t.Errorf("error %d: %v, want it to say %q", i, err, tc.want[i])
				}
			}
		})
	}
}

func TestExplains(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	a, b := &Target{Name: "a"}, &Target{Name: "b"}
	f := &Flapper{outages: map[*Target][]outage{
		a: {{Start: at(10), Cut: at(10.01), End: at(16)}},
		b: {{Start: at(40), Cut: at(40.01)}}, // still down
	}}
	for _, tc := range []struct {
		name       string
		targets    []*Target
		pooled     bool
		start, end float64
		want       bool
	}{
		{"pooled: under way when the target went down", []*Target{a}, true, 9, 11, true},
		{"pooled: started while its connections were cut", []*Target{a}, true, 10.005, 12, true},
		{"pooled: started just after they were cut", []*Target{a}, true, 10.2, 12, true},
		{"pooled: started while the target was down", []*Target{a}, true, 11, 12, false},
		{"pooled: ended before the outage", []*Target{a}, true, 5, 9.9, false},
		{"pooled: another target's outage", []*Target{b}, true, 9, 11, false},
		{"solo: during the outage", []*Target{a}, false, 11, 12, true},
		{"solo: across its end", []*Target{a}, false, 15, 17, true},
		{"solo: after it", []*Target{a}, false, 16.1, 17, false},
		{"solo: still down", []*Target{b}, false, 50, 51, true},
		{"solo: before an open outage", []*Target{b}, false, 38, 39, false},
	} {
		if got := f.explains(tc.targets, tc.pooled, at(tc.start), at(tc.end)); got != tc.want {
			t.Errorf("%s: explains = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestScheduleDownAt(t *testing.T) {
	s := Schedule{Period: 30 * time.Second, Down: 6 * time.Second, Offset: 5 * time.Second}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {4 * time.Second, false}, {5 * time.Second, true}, {10 * time.Second, true},
		{11 * time.Second, false}, {35 * time.Second, true}, {41 * time.Second, false}} {
		if got := s.downAt(tc.at); got != tc.want {
			t.Errorf("down at %v = %v, want %v", tc.at, got, tc.want)
		}
	}
	// The pool's targets are never down together.
	for at := time.Duration(0); at < 2*time.Minute; at += 100 * time.Millisecond {
		n := 0
		for i := range 3 {
			if poolSchedule(i).downAt(at) {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("%d pool targets down at %v", n, at)
		}
	}
}

// shortRun runs a few seconds of soak with the fault planted in the proxy.
func shortRun(t *testing.T, fault string, d time.Duration) (*Report, string, error) {
	t.Helper()
	var log strings.Builder
	rep, err := Run(t.Context(), Config{
		Duration: d, SampleEvery: 250 * time.Millisecond, Warmup: time.Second,
		H1Workers: 4, H2CWorkers: 1, TLSWorkers: 1, Settle: 5 * time.Second,
		Dir: t.TempDir(), Fault: fault, Seed: 1, Log: &log,
	})
	return rep, log.String(), err
}

// The soak passes a proxy without defects, and every kind of exchange
// succeeds at least once (a short run: CI runs the 60-second one).
func TestSoakShortRun(t *testing.T) {
	rep, log, err := shortRun(t, "", 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if rep.Exchanges == 0 || rep.Outages == 0 || len(rep.Samples) < 30 {
		t.Errorf("%d exchanges, %d outages, %d samples\n%s", rep.Exchanges, rep.Outages, len(rep.Samples), log)
	}
}

// The soak catches the defects it is there to catch.
func TestSoakCatchesPlantedFaults(t *testing.T) {
	for _, tc := range []struct {
		fault string
		want  string // in the returned error
		kind  string // a kind with violations, if any
	}{
		{"leak", "did not settle", ""},
		{"truncate", "failed exchanges that no outage explains", "download"},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			rep, log, err := shortRun(t, tc.fault, 4*time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q\n%s", err, tc.want, log)
			}
			if tc.kind != "" {
				if c := rep.Kinds[tc.kind]; c == nil || c.Violations == 0 {
					t.Errorf("no violation counted for %s\n%s", tc.kind, log)
				}
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) {
				t.Errorf("error %T is not a list of problems", err)
			}
		})
	}
}
