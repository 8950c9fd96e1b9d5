// Command soak is sluice's soak: it runs a proxy (sluice.Proxy on
// sluice.Server, in a process of its own) with every capability wired,
// mixes every kind of exchange through it for -duration while its
// upstream targets go down and come back on a schedule, samples the
// proxy's goroutines, descriptors and RSS, and exits 1 when an exchange
// failed without an outage to explain it or a resource grew (package
// soak says how it judges). Linux only.
//
//	go run ./soak/cmd/soak -duration 60s                       # the CI run
//	go run ./soak/cmd/soak -duration 1h -png ../docs/soak.png  # the soak
//	go run ./soak/cmd/soak -plot DIR/soak.csv -png out.png     # redraw a run
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/robustness/soak"
)

func main() {
	soak.ProxyMain() // when started as the proxy process

	var cfg soak.Config
	flag.DurationVar(&cfg.Duration, "duration", time.Hour, "how long the load runs")
	flag.DurationVar(&cfg.SampleEvery, "sample", 0, "time between samples (default 10s, 1s for a -duration of 5m or less)")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "start of the load ignored by the flatness check (default: a sixth of -duration)")
	flag.IntVar(&cfg.H1Workers, "h1", 8, "HTTP/1.1 clients")
	flag.IntVar(&cfg.H2CWorkers, "h2c", 2, "HTTP/2 (h2c) clients")
	flag.IntVar(&cfg.TLSWorkers, "tls", 2, "HTTP/2 over TLS clients")
	flag.StringVar(&cfg.Dir, "out", "", "directory for soak.csv, proxy.log and the TLS key pair (default: a new temporary directory)")
	flag.StringVar(&cfg.PNG, "png", "", "draw the run into this PNG")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed of the clients' choices (default: random)")
	plotCSV := flag.String("plot", "", "only draw the soak.csv of an earlier run into -png (with -warmup as it ran)")
	flag.Parse()

	if *plotCSV != "" {
		if err := redraw(*plotCSV, cfg.PNG, cfg.Warmup); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(2)
		}
		return
	}
	if cfg.Duration <= 0 {
		fmt.Fprintln(os.Stderr, "soak: -duration must be positive")
		os.Exit(2)
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "sluice-soak-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(2)
		}
		cfg.Dir = d
	}
	// An interrupt ends the load early; the run is judged as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := soak.Run(ctx, cfg); err != nil {
		os.Exit(1)
	}
}

func redraw(csvPath, png string, warmup time.Duration) error {
	if png == "" {
		return fmt.Errorf("-plot needs -png")
	}
	f, err := os.Open(csvPath)
	if err != nil {
		return err
	}
	defer f.Close()
	samples, err := soak.ReadCSV(f)
	if err != nil {
		return err
	}
	return soak.Plot(samples, warmup, png)
}
