package faults

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// KindNames are the short names of the traffic kinds (flags, test names).
var KindNames = map[string]Kind{
	"small": Small, "download": Download, "upload": Upload, "sse": SSE, "ws": WebSocket, "grpc": GRPC,
}

// WriteMarkdown writes the results as a table (a row per fault, link and
// traffic kind, a column per proxy), then a table of the resources per
// proxy and the list of violations.
func WriteMarkdown(w io.Writer, cfg Config, proxies []string, results []Result) {
	type key struct {
		fault string
		link  Link
		kind  Kind
	}
	byCell := map[key]map[string]Result{}
	var cells []Cell
	for _, r := range results {
		k := key{r.Cell.Fault.Name, r.Cell.Link, r.Cell.Kind}
		if byCell[k] == nil {
			byCell[k] = map[string]Result{}
			cells = append(cells, r.Cell)
		}
		byCell[k][r.Proxy] = r
	}
	fmt.Fprintf(w, "| fault | link | traffic | %s |\n", strings.Join(proxies, " | "))
	fmt.Fprintf(w, "|---|---|---|%s\n", strings.Repeat("---|", len(proxies)))
	for _, c := range cells {
		link := string(c.Link)
		if link == "" {
			link = "—"
		}
		row := []string{c.Fault.Name, link, kindText(cfg, c)}
		for _, p := range proxies {
			r, ok := byCell[key{c.Fault.Name, c.Link, c.Kind}][p]
			if !ok {
				row = append(row, "")
				continue
			}
			row = append(row, strings.ReplaceAll(r.Text(), "|", "\\|"))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}

	fmt.Fprintf(w, "\nResources after each case (End − Base, the first sample within the bounds or the last one), worst case per process (sluice serves gRPC from an instance of its own), and the baseline of the first case against the end of the last (a slow leak would show there):\n\n")
	fmt.Fprintf(w, "| process | cases | max Δ goroutines | max Δ fds | max Δ RSS | longest return | not back | first baseline | last end |\n|---|---|---|---|---|---|---|---|---|\n")
	var procs []string
	for _, r := range results {
		if !slices.Contains(procs, r.Process) {
			procs = append(procs, r.Process)
		}
	}
	for _, p := range procs {
		var n, notBack int
		var first, last *Result
		dg, df := -1<<31, -1<<31
		var drss int64 = -1 << 62
		var longest time.Duration
		goroutines := false
		for _, r := range results {
			if r.Process != p || r.Err != "" {
				continue
			}
			n++
			if first == nil {
				first = &r
			}
			last = &r
			if r.Base.Goroutines >= 0 {
				goroutines = true
				dg = max(dg, r.End.Goroutines-r.Base.Goroutines)
			}
			df = max(df, r.End.FDs-r.Base.FDs)
			drss = max(drss, r.End.RSS-r.Base.RSS)
			longest = max(longest, r.BackAfter)
			if !r.Back {
				notBack++
			}
		}
		if n == 0 {
			continue
		}
		g := "n/a"
		if goroutines {
			g = fmt.Sprintf("%+d", dg)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %+d | %+.1f MiB | %.1f s | %d | %s | %s |\n", p, n, g, df, float64(drss)/(1<<20), longest.Seconds(), notBack,
			sampleText(first.Base), sampleText(last.End))
	}

	fmt.Fprintf(w, "\nViolations:\n\n")
	any := false
	for _, r := range results {
		for _, v := range r.Violations() {
			any = true
			fmt.Fprintf(w, "- %s, %s, %s link, %s: %s\n", r.Proxy, r.Cell.Fault.Name, linkText(r.Cell.Link), r.Cell.Kind, v)
		}
	}
	if !any {
		fmt.Fprintf(w, "- none\n")
	}
}

// sampleText is a sample in a table cell.
func sampleText(s Sample) string {
	t := fmt.Sprintf("%d fds, %.1f MiB", s.FDs, float64(s.RSS)/(1<<20))
	if s.Goroutines >= 0 {
		t = fmt.Sprintf("%d goroutines, ", s.Goroutines) + t
	}
	return t
}

func linkText(l Link) string {
	if l == "" {
		return "no"
	}
	return string(l)
}

// kindText names the traffic with its size.
func kindText(cfg Config, c Cell) string {
	switch c.Kind {
	case Small:
		return fmt.Sprintf("GET %s", mib(cfg.SmallSize))
	case Download, Upload:
		size := cfg.Size
		if c.Fault.Size != 0 {
			size = c.Fault.Size
		}
		verb := "GET"
		if c.Kind == Upload {
			verb = "POST"
		}
		return fmt.Sprintf("%s %s chunked", verb, mib(size))
	case SSE:
		return fmt.Sprintf("SSE %d events", cfg.Messages)
	case WebSocket:
		return fmt.Sprintf("WebSocket %d×%s", cfg.Messages, mib(int64(cfg.MessageSize)))
	case GRPC:
		return fmt.Sprintf("gRPC bidi %d×%s", cfg.Messages, mib(int64(cfg.MessageSize)))
	}
	return string(c.Kind)
}
