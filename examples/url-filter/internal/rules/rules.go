// Package rules is the sample url_rewrite helper of the url-filter
// starter: a host block list, a path rewrite and a path redirect, spoken
// over Squid's helper line protocol. It is shared by the standalone helper
// program (./helper) and url-filter's built-in default.
package rules

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"

	"golang.org/x/net/idna"
)

// Rules is the helper's policy.
type Rules struct {
	// Block lists host names (and their subdomains) to deny. Entries and
	// request hosts are compared in the form NormalizeHost gives them, so
	// "Blocked.Example.", "blocked.example.:80" and a fullwidth-dot
	// spelling are all blocked by "blocked.example". Serve normalizes
	// the list in place.
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
	r.normalize()
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
			method := ""
			if len(fields) > 3 {
				method = fields[3]
			}
			answer, ok := r.decide(fields[0], client, method)
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

// normalize puts the block list in the form NormalizeHost gives hosts,
// dropping a leading dot (".example.com" blocks example.com and its
// subdomains, like "example.com"). Entries that do not normalize are
// kept lowercased, so that they still match what they spell.
func (r *Rules) normalize() {
	for i, b := range r.Block {
		b = strings.TrimLeft(b, ".")
		if n, err := NormalizeHost(b); err == nil {
			r.Block[i] = n
		} else {
			r.Block[i] = strings.ToLower(b)
		}
	}
}

// hostProfile maps Unicode host names as browsers and resolvers do
// (UTS #46: fullwidth letters and dots, case), without refusing the
// underscores real DNS names carry.
var hostProfile = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.StrictDomainName(false))

// NormalizeHost returns the canonical spelling of a host (or host:port):
// the port and IPv6 brackets dropped, Unicode mapped to its ASCII
// (punycode) form, lower case, trailing dots removed. Two spellings of
// one name normalize to the same string.
func NormalizeHost(host string) (string, error) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			a, err := hostProfile.ToASCII(host)
			if err != nil {
				return "", fmt.Errorf("host %q: %w", host, err)
			}
			host = a
			break
		}
	}
	return strings.TrimRight(strings.ToLower(host), "."), nil
}

// decide returns the answer for one URL, or false to stay silent. For a
// CONNECT the URL is the tunnel's "host:port", as Squid sends it.
func (r *Rules) decide(raw, client, method string) (string, bool) {
	u, err := url.Parse(raw)
	if method == "CONNECT" {
		u, err = &url.URL{Host: raw}, nil
		if _, _, e := net.SplitHostPort(raw); e != nil {
			err = e
		}
	}
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
	// The host as the client spelled it: Squid would hand a helper a
	// normalized one, so normalize it here too (and fail closed: BH
	// would let the request through a proxy running with -bypass).
	host, err := NormalizeHost(u.Hostname())
	if err != nil {
		return fmt.Sprintf("ERR message=%q", "unparseable host: "+err.Error()), true
	}
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
