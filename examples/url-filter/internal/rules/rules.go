// Package rules is the sample url_rewrite helper of the url-filter
// starter: a host block list, a path rewrite and a path redirect, spoken
// over Squid's helper line protocol. It is shared by the standalone helper
// program (./helper) and url-filter's built-in default.
package rules

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
)

// Rules is the helper's policy.
type Rules struct {
	// Block lists host names (and their subdomains) to deny.
	Block []string
	// RewriteFrom and RewriteTo: a path starting with RewriteFrom is sent
	// upstream with that prefix replaced by RewriteTo (the client does not
	// see it).
	RewriteFrom, RewriteTo string
	// RedirectFrom and RedirectTo: a path starting with RedirectFrom gets
	// a 301 to the same path under RedirectTo.
	RedirectFrom, RedirectTo string
	// Channels says whether request lines carry a channel ID (Squid's
	// concurrency > 0).
	Channels bool
	// TestHooks enables paths that misbehave on purpose, for tests:
	// /crash exits, /hang never answers, /garbage answers nonsense, /bh
	// answers BH, /whoami is rewritten to /whoami?client=IP (the client
	// address the helper was given).
	TestHooks bool
}

// Default is the demo policy.
var Default = Rules{
	Block:        []string{"blocked.example", "ads.example"},
	RewriteFrom:  "/old/",
	RewriteTo:    "/new/",
	RedirectFrom: "/moved/",
	RedirectTo:   "/new/",
}

// Serve answers the request lines of in on out until in ends.
func (r *Rules) Serve(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	w := bufio.NewWriter(out)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		id := ""
		if r.Channels && len(fields) > 0 {
			id, fields = fields[0]+" ", fields[1:]
		}
		if len(fields) == 0 {
			fmt.Fprintf(w, "%sBH message=\"empty request\"\n", id)
		} else {
			client := "-"
			if len(fields) > 1 {
				client, _, _ = strings.Cut(fields[1], "/")
			}
			answer, ok := r.decide(fields[0], client)
			if !ok {
				continue // /hang
			}
			w.WriteString(id + answer + "\n")
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

// decide returns the answer for one URL, or false to stay silent.
func (r *Rules) decide(raw, client string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return `BH message="unparseable URL"`, true
	}
	if r.TestHooks {
		switch u.Path {
		case "/crash":
			os.Exit(3)
		case "/hang":
			return "", false
		case "/garbage":
			return "I am not a helper", true
		case "/bh":
			return `BH message="helper cannot decide"`, true
		case "/whoami":
			return "OK rewrite-url=" + raw + "?client=" + url.QueryEscape(client), true
		}
	}
	host := strings.ToLower(u.Hostname())
	for _, b := range r.Block {
		if host == b || strings.HasSuffix(host, "."+b) {
			return fmt.Sprintf("ERR message=%q", "blocked by url-filter: "+host), true
		}
	}
	if r.RewriteFrom != "" && strings.HasPrefix(u.Path, r.RewriteFrom) {
		v := *u
		v.Path = r.RewriteTo + strings.TrimPrefix(u.Path, r.RewriteFrom)
		v.RawPath = ""
		return "OK rewrite-url=" + v.String(), true
	}
	if r.RedirectFrom != "" && strings.HasPrefix(u.Path, r.RedirectFrom) {
		v := *u
		v.Path = r.RedirectTo + strings.TrimPrefix(u.Path, r.RedirectFrom)
		v.RawPath = ""
		return "OK status=301 url=" + v.String(), true
	}
	return "OK", true
}
