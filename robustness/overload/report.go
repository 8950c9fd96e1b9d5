package overload

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Row is one line of a results table: a proxy's outcome of a run.
type Row struct {
	Proxy    string
	Out      *Outcome
	Idle     Mem // after the clients connected and went idle (keep-alive run)
	Before   Mem // before the clients connected
	After    Mem // at the end of the run
	Clients  int
	LogLines int // lines the proxy logged during the run

	UpstreamConns int64 // connections the upstream accepted from the proxy
}

// ms formats d in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// Statuses formats the status counts, "200: 9,000, 503: 1,000".
func Statuses(o *Outcome) string {
	var keys []int
	for k := range o.Status {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d: %d", k, o.Status[k]))
	}
	return strings.Join(parts, ", ")
}

// Errors formats the error counts, or "0", and the retries.
func Errors(o *Outcome) string {
	retried := ""
	if o.Retried > 0 {
		retried = fmt.Sprintf(" (%d sent again on a new connection)", o.Retried)
	}
	if len(o.Errors) == 0 {
		return "0" + retried
	}
	var keys []string
	for k := range o.Errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, o.Errors[k]))
	}
	return strings.Join(parts, ", ") + retried
}

// KeepAliveTable is the table of keep-alive runs.
func KeepAliveTable(rows []Row) string {
	var b strings.Builder
	b.WriteString("| proxy | clients | requests | req/s | statuses | errors | p50 ms | p99 ms | max ms | RSS idle − before, KiB/conn | RSS peak MiB | CPU s | upstream conns |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		o := r.Out
		perConn := float64(r.Idle.RSS-r.Before.RSS) / float64(r.Clients) / 1024
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %.1f | %s | %.1f | %d |\n",
			r.Proxy, r.Clients, o.Requests, float64(o.Requests)/o.Elapsed.Seconds(), Statuses(o), Errors(o),
			ms(o.Latency.Quantile(0.5)), ms(o.Latency.Quantile(0.99)), ms(o.Latency.Max()),
			perConn, mib(r.After.HWM), (r.After.CPU - r.Idle.CPU).Seconds(), r.UpstreamConns)
	}
	return b.String()
}

// BeyondTable is the table of runs beyond capacity.
func BeyondTable(rows []Row) string {
	var b strings.Builder
	b.WriteString("| proxy | clients | answered/s | 2xx | refused (429/503) | other statuses | errors | 2xx p50 / p99 ms | refusal p50 / p99 / max ms | RSS peak MiB | CPU s | log lines |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		o := r.Out
		var ok, shed, other int64
		for k, v := range o.Status {
			switch {
			case k >= 200 && k < 300:
				ok += v
			case k == 429 || k == 503:
				shed += v
			default:
				other += v
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %d | %d | %d | %s | %s / %s | %s / %s / %s | %s | %.1f | %d |\n",
			r.Proxy, r.Clients, float64(o.Requests)/o.Elapsed.Seconds(), ok, shed, other, Errors(o),
			ms(o.OKLat.Quantile(0.5)), ms(o.OKLat.Quantile(0.99)),
			ms(o.ShedLat.Quantile(0.5)), ms(o.ShedLat.Quantile(0.99)), ms(o.ShedLat.Max()),
			mib(r.After.HWM), (r.After.CPU - r.Idle.CPU).Seconds(), r.LogLines)
	}
	return b.String()
}
