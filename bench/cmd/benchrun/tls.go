package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/bench/internal/origin"
)

// tlsFiles is the run's self-signed certificate, one ECDSA P-256 key for
// 127.0.0.1 and localhost, made once per run and served by every system
// in the TLS scenarios F, G, H.
type tlsFiles struct {
	cert, key, certKey string // PEM files: certificate, PKCS#8 key, both in one (HAProxy)
	pool               *x509.CertPool
	client             *http.Client // readiness over TLS, trusting only this certificate
}

func makeCert(dir string) (*tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "sluice-bench"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	t := &tlsFiles{
		cert:    filepath.Join(dir, "cert.pem"),
		key:     filepath.Join(dir, "key.pem"),
		certKey: filepath.Join(dir, "cert+key.pem"),
		pool:    x509.NewCertPool(),
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{t.cert, certPEM, 0o644},
		{t.key, keyPEM, 0o600},
		{t.certKey, append(append([]byte(nil), certPEM...), keyPEM...), 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	t.pool.AddCert(crt)
	t.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: t.pool},
	}}
	return t, nil
}

// ticketCounter is a client session cache that counts the tickets it gets.
type ticketCounter struct {
	tls.ClientSessionCache
	n int
}

func (c *ticketCounter) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.n++
	}
	c.ClientSessionCache.Put(key, cs)
}

// resumes reports whether the TLS server on port resumes sessions, and how
// many tickets it sends per connection: a first connection makes one
// request and keeps whatever tickets come, a second one offers one. h2load
// (scenario H) offers a session too when it holds one, so H measures a full
// handshake per connection only when the server refuses resumption.
func (t *tlsFiles) resumes(port int) (resumed bool, tickets int, err error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cache := &ticketCounter{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	cfg := &tls.Config{RootCAs: t.pool, NextProtos: []string{"http/1.1"}, ClientSessionCache: cache}
	for i := range 2 {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return false, 0, err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /small HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
		// TLS 1.3 servers send tickets after the handshake: reading the
		// response processes them.
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		resumed = c.ConnectionState().DidResume
		c.Close()
		if err != nil {
			return false, 0, err
		}
		if i == 0 {
			tickets = cache.n
		}
	}
	return resumed, tickets, nil
}

// ---------- F, G, H ----------

// scenF is A over TLS: wrk speaks HTTP/1.1 (it offers no ALPN) and keeps
// its connections, so it pays one handshake per connection at the start.
func (r *runner) scenF(sys system, tag string) row {
	return r.wrkScenario(sys, tag, r.smallUpstreamPort(), "/small", r.cfg.conns, true)
}

// scenG is HTTP/2 over TLS: --h2-streams requests in flight on each of
// --h2-conns connections.
func (r *runner) scenG(sys system, tag string) (rw row) {
	in, err := r.startSystem(sys, r.smallUpstreamPort(), tag, true)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	defer in.stop()
	args := []string{"-t", "1", "-c", strconv.Itoa(r.cfg.h2Conns), "-m", strconv.Itoa(r.cfg.h2Streams)}
	res, w, err := r.h2loadRuns(in, tag, args, r.cfg.h2Conns)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	r.h2loadMetrics(&rw, in, res, w, "rps", "proxy_cpu_us_per_req")
	if rw.Err == "" && res.ALPN != "h2" {
		rw.Err = fmt.Sprintf("HTTP/2 was not negotiated (h2load's application protocol: %q)", res.ALPN)
	}
	return
}

// scenH sends every request on a new connection (HTTP/1.1, Connection:
// close), so that every request costs the proxy a full TLS handshake.
func (r *runner) scenH(sys system, tag string) (rw row) {
	in, err := r.startSystem(sys, r.smallUpstreamPort(), tag, true)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	defer in.stop()
	resumed, tickets, err := r.tls.resumes(in.port)
	switch {
	case err != nil:
		rw.Err = "TLS resumption probe: " + err.Error()
		return
	case resumed:
		rw.Err = "the server resumed a TLS session: H needs session tickets and the session cache off, so that every connection is a full handshake"
		return
	}
	rw.set("tickets_per_conn", float64(tickets))
	if tickets > 0 {
		rw.note("the server sends %d session ticket(s) per connection that it never resumes (wasted work; OpenSSL: NumTickets 0)", tickets)
	}
	args := []string{"--h1", "-t", "1", "-c", strconv.Itoa(r.cfg.hsConns), "-m", "1", "-H", "Connection: close"}
	res, w, err := r.h2loadRuns(in, tag, args, r.cfg.hsConns)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	r.h2loadMetrics(&rw, in, res, w, "hs_per_s", "proxy_cpu_us_per_hs")
	// Every request must have had a connection of its own: count the TCP
	// connections accepted meanwhile (anywhere in this network namespace,
	// so other traffic can only raise the count).
	conns := float64(w.t1.passive - w.t0.passive)
	rw.set("new_conns", conns)
	if res.Done > 0 {
		rw.set("new_conns_per_req", conns/res.Done)
	}
	if rw.Err == "" && conns < res.Done {
		rw.Err = fmt.Sprintf("only %.0f TCP connections were accepted for %.0f requests: the server kept connections open despite Connection: close", conns, res.Done)
	}
	return
}

// h2loadResult is h2load's end-of-run summary.
type h2loadResult struct {
	Secs                                             float64 // wall time of the run
	Total, Done, Succeeded, Failed, Errored, Timeout float64
	S2xx, S3xx, S4xx, S5xx                           float64
	BodyBytes                                        float64 // response body bytes
	ReqMeanMs                                        float64 // mean "time for request"
	Protocol, Cipher, TempKey, ALPN                  string  // of the run's first connection
}

var (
	reH2Finished = regexp.MustCompile(`finished in ([0-9.]+(?:us|ms|s)),`)
	reH2Requests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2Status   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	reH2Body     = regexp.MustCompile(`\((\d+)\) data`)
	reH2ReqTime  = regexp.MustCompile(`time for request:\s+(\S+)\s+(\S+)\s+(\S+)`)
)

// h2loadDuration parses h2load's "850us", "3.29ms", "2.01s" into seconds.
func h2loadDuration(s string) (float64, error) {
	unit := 1.0
	switch {
	case strings.HasSuffix(s, "us"):
		s, unit = strings.TrimSuffix(s, "us"), 1e-6
	case strings.HasSuffix(s, "ms"):
		s, unit = strings.TrimSuffix(s, "ms"), 1e-3
	default:
		s = strings.TrimSuffix(s, "s")
	}
	v, err := strconv.ParseFloat(s, 64)
	return v * unit, err
}

func parseH2load(out string) (h2loadResult, error) {
	var res h2loadResult
	fin, req, st := reH2Finished.FindStringSubmatch(out), reH2Requests.FindStringSubmatch(out), reH2Status.FindStringSubmatch(out)
	if fin == nil || req == nil || st == nil {
		return res, errors.New("h2load printed no summary")
	}
	num := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	res.Secs, _ = h2loadDuration(fin[1])
	res.Total, res.Done, res.Succeeded = num(req[1]), num(req[3]), num(req[4])
	res.Failed, res.Errored, res.Timeout = num(req[5]), num(req[6]), num(req[7])
	res.S2xx, res.S3xx, res.S4xx, res.S5xx = num(st[1]), num(st[2]), num(st[3]), num(st[4])
	if b := reH2Body.FindStringSubmatch(out); b != nil {
		res.BodyBytes = num(b[1])
	}
	if t := reH2ReqTime.FindStringSubmatch(out); t != nil {
		if s, err := h2loadDuration(t[3]); err == nil {
			res.ReqMeanMs = s * 1e3
		}
	}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "TLS Protocol":
			res.Protocol = v
		case "Cipher":
			res.Cipher = v
		case "Server Temp Key":
			res.TempKey, _, _ = strings.Cut(v, " ")
		case "Application protocol":
			res.ALPN = v
		}
	}
	return res, nil
}

func (r *runner) h2load(args []string, url string, n int, limit time.Duration, logFile string) (h2loadResult, error) {
	out, err := r.runTool(append(append([]string{"h2load"}, args...), "-n", strconv.Itoa(n), url), limit, logFile)
	if err != nil {
		return h2loadResult{}, err
	}
	return parseH2load(out)
}

// h2loadRuns warms the system up with h2load, then measures one run of
// about --duration. h2load runs a number of requests (-n), not a time
// (-D): in timing mode h2load 1.52 does not end when it has to reconnect
// (H). So the warm-up starts with a short run and sizes each next one from
// the rate of the last, and the last rate sizes the measured run. Even
// with --warmup 0 there is one short run.
func (r *runner) h2loadRuns(in *instance, tag string, args []string, conns int) (h2loadResult, *window, error) {
	url := in.url("/small")
	minN := 20 * conns
	n, rate := minN, 0.0
	var spent time.Duration
	for i := 1; i <= 5; i++ {
		res, err := r.h2load(args, url, n, 30*time.Second+3*r.cfg.warmup, r.logPath(tag, fmt.Sprintf("h2load-warmup%d", i)))
		if err != nil {
			return res, nil, fmt.Errorf("warm-up: %v", err)
		}
		if res.S2xx == 0 || res.Secs <= 0 {
			return res, nil, fmt.Errorf("warm-up: no 2xx responses (%.0f requests, %.0f failed, %.0f errored)", res.Total, res.Failed, res.Errored)
		}
		rate = res.S2xx / res.Secs
		spent += time.Duration(res.Secs * float64(time.Second))
		left := r.cfg.warmup - spent
		if left < 100*time.Millisecond {
			break
		}
		n = max(int(rate*left.Seconds()), minN)
	}
	n = max(int(rate*r.cfg.duration.Seconds()), minN)
	w := begin(in.pid())
	res, err := r.h2load(args, url, n, 30*time.Second+3*r.cfg.duration, r.logPath(tag, "h2load"))
	w.end()
	return res, w, err
}

// h2loadMetrics records a measured h2load run: rateKey is the headline
// (2xx responses per second), cpuKey the proxy's CPU per request.
func (r *runner) h2loadMetrics(rw *row, in *instance, res h2loadResult, w *window, rateKey, cpuKey string) {
	// Every request that did not end in a 2xx is an error: failed
	// streams and connections, timeouts, other statuses.
	errs := res.Total - res.S2xx
	rw.set("requests", res.S2xx)
	rw.set("secs", res.Secs)
	if res.Secs > 0 {
		rw.set(rateKey, res.S2xx/res.Secs)
	}
	rw.set("mean_ms", res.ReqMeanMs)
	rw.set("errors", errs)
	w.record(rw, r.place, "")
	if in.pid() > 0 && res.Done > 0 {
		rw.set(cpuKey, w.cpuSeconds()*1e6/res.Done)
	}
	rw.info("tls", strings.Join([]string{orDash(res.Protocol), orDash(res.Cipher), orDash(res.TempKey), orDash(res.ALPN)}, " "))
	if errs > 0 {
		rw.note("h2load: %.0f requests, %.0f 2xx, %.0f 3xx, %.0f 4xx, %.0f 5xx, %.0f failed, %.0f errored, %.0f timeout",
			res.Total, res.S2xx, res.S3xx, res.S4xx, res.S5xx, res.Failed, res.Errored, res.Timeout)
	} else if want := res.S2xx * float64(len(origin.SmallBody)); res.BodyBytes != want {
		// h2load does not look at bodies, but it counts their bytes.
		rw.Err = fmt.Sprintf("the responses carried %.0f body bytes, want %.0f (%d each)", res.BodyBytes, want, len(origin.SmallBody))
	}
}
