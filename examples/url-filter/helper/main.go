// Command helper is the sample url_rewrite helper of the url-filter
// starter. Like any Squid url_rewrite_program it reads one request per
// line on stdin ("[channel-ID] URL client/fqdn user method ...") and
// answers one line on stdout: ERR for blocked hosts, OK rewrite-url= for
// the rewrite rule, OK status=301 url= for the redirect rule, OK for the
// rest.
//
//	helper -concurrency -block blocked.example,ads.example
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sluiceproxy/sluice/examples/url-filter/internal/rules"
)

func main() {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `helper: the sample url_rewrite helper of url-filter.

Like any Squid url_rewrite_program it reads one request per line on stdin
("[channel-ID] URL client/fqdn user method ...") and answers one line on
stdout: ERR for blocked hosts (however their name is spelled), OK
rewrite-url= for the rewrite rule, OK status=301 url= for the redirect
rule, OK for the rest. Run it with url-filter -helper PATH.

Flags:
`)
		flag.PrintDefaults()
	}
	r := rules.Default
	block := flag.String("block", strings.Join(r.Block, ","), "comma-separated hosts to block (subdomains included)")
	flag.StringVar(&r.RewriteFrom, "rewrite-from", r.RewriteFrom, "path prefix to rewrite")
	flag.StringVar(&r.RewriteTo, "rewrite-to", r.RewriteTo, "replacement of -rewrite-from")
	flag.StringVar(&r.RedirectFrom, "redirect-from", r.RedirectFrom, "path prefix to redirect (301)")
	flag.StringVar(&r.RedirectTo, "redirect-to", r.RedirectTo, "replacement of -redirect-from")
	flag.BoolVar(&r.Channels, "concurrency", false, "request lines start with a channel ID (Squid concurrency > 0)")
	flag.BoolVar(&r.TestHooks, "test-hooks", false, "misbehave on /crash, /hang, /garbage and /bh (for tests)")
	flag.Parse()
	r.Block = nil
	for _, b := range strings.Split(*block, ",") {
		if b = strings.TrimSpace(b); b != "" {
			r.Block = append(r.Block, strings.ToLower(b))
		}
	}
	if err := r.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
}
