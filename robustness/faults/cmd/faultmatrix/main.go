// Command faultmatrix runs sluice's fault matrix (package faults):
// Toxiproxy on the client link and on the upstream link of sluice
// (examples/passthrough), nginx and httputil.ReverseProxy (cmd/httputil),
// one toxic at a time, for each kind of traffic, and prints the outcomes
// side by side as Markdown. run.sh builds the programs and runs it.
//
//	faultmatrix -toxiproxy BIN -sluice BIN -httputil BIN [-nginx /usr/sbin/nginx] > table.md
//	faultmatrix ... -proxies sluice -faults reset,limit -kinds download,upload
package main

import (
	"context"
	"flag"
	"fmt"
	"go/build"
	"log"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/robustness/faults"
)

func main() {
	var bins faults.Bins
	flag.StringVar(&bins.Toxiproxy, "toxiproxy", filepath.Join(filepath.SplitList(build.Default.GOPATH)[0], "bin", "toxiproxy", "server"), "Toxiproxy's server")
	flag.StringVar(&bins.Sluice, "sluice", "", "examples/passthrough, built")
	flag.StringVar(&bins.HTTPUtil, "httputil", "", "robustness/faults/cmd/httputil, built")
	flag.StringVar(&bins.Nginx, "nginx", "/usr/sbin/nginx", "nginx")
	proxies := flag.String("proxies", "sluice,nginx,httputil", "proxies under test, comma-separated")
	faultList := flag.String("faults", "", "faults (prefixes of their names: none,latency,bandwidth,slicer,reset,timeout,limit,slow), comma-separated; empty: all")
	linkList := flag.String("links", "client,upstream", "links, comma-separated")
	kindList := flag.String("kinds", "small,download,upload,sse,ws,grpc", "traffic kinds, comma-separated")
	size := flag.Int64("size", faults.DefaultConfig.Size, "body size of downloads and uploads (but under bandwidth and slicer, 4 and 1 MiB)")
	dir := flag.String("dir", "", "directory for logs and nginx's files (default: a temporary one, removed)")
	flag.Parse()

	cfg := faults.DefaultConfig
	cfg.Size = *size
	var fs []faults.Fault
	if *faultList == "" {
		fs = faults.Faults
	} else {
		for _, name := range strings.Split(*faultList, ",") {
			f, ok := faults.FaultNamed(name)
			if !ok {
				log.Fatalf("faultmatrix: no fault %q", name)
			}
			fs = append(fs, f)
		}
	}
	var links []faults.Link
	for _, l := range strings.Split(*linkList, ",") {
		links = append(links, faults.Link(l))
	}
	var kinds []faults.Kind
	for _, k := range strings.Split(*kindList, ",") {
		kind, ok := faults.KindNames[k]
		if !ok {
			log.Fatalf("faultmatrix: no traffic kind %q", k)
		}
		kinds = append(kinds, kind)
	}
	names := strings.Split(*proxies, ",")

	if *dir == "" {
		d, err := os.MkdirTemp("", "faultmatrix-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	env, err := faults.Start(*dir, bins, names, cfg)
	if err != nil {
		log.Fatalf("faultmatrix: %v", err)
	}
	defer env.Stop()

	cells := faults.Cells(fs, links, kinds)
	start := time.Now()
	var results []faults.Result
	for i, c := range cells {
		for _, name := range names {
			s, err := env.Subject(name)
			if err != nil {
				log.Fatal(err)
			}
			// A case is bounded by its own timeouts; one that outlives
			// them all is a bug of the harness: show where it stands.
			stuck := time.AfterFunc(3*time.Minute, func() {
				fmt.Fprintf(os.Stderr, "faultmatrix: %s, %s, %s link, %s: stuck for 3 minutes; goroutines:\n", name, c.Fault.Name, c.Link, c.Kind)
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
				env.Stop()
				os.Exit(2)
			})
			r := env.Run(context.Background(), s, c)
			stuck.Stop()
			results = append(results, r)
			flag := ""
			if len(r.Violations()) > 0 {
				flag = "  <<< " + strings.Join(r.Violations(), "; ")
			}
			fmt.Fprintf(os.Stderr, "[%d/%d %4.0fs] %-8s %-22s %-8s %-15s %-40s %.1fs%s\n", i+1, len(cells), time.Since(start).Seconds(),
				name, c.Fault.Name, c.Link, c.Kind, r.Text(), r.Outcome.Elapsed.Seconds(), flag)
		}
	}
	fmt.Printf("Measured %s in %.0f s on %s.\n\n", time.Now().UTC().Format("2006-01-02"), time.Since(start).Seconds(), hostDescription())
	faults.WriteMarkdown(os.Stdout, cfg, names, results)
	for _, r := range results {
		if len(r.Violations()) > 0 {
			env.Stop()
			os.Exit(1)
		}
	}
}

// hostDescription names the CPUs.
func hostDescription() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "this machine"
	}
	model, n := "", 0
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
			n++
		}
	}
	return fmt.Sprintf("%d × %s", n, model)
}
