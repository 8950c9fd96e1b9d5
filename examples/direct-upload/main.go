// Command direct-upload is a smart reverse proxy in the manner of GitLab
// Workhorse: it sits in front of a slow application and keeps large
// uploads away from it. For an upload the proxy asks the application
// where the body may go (pre-authorization: the application presigns S3
// URLs), streams the body straight to object storage, and forwards the
// request without the body but with a signed description of the stored
// object. Downloads are answered by the application with a presigned GET
// URL, which the proxy streams to the client (ranges work).
//
// With no flags it starts versitygw (an S3-compatible server) on a
// temporary directory, a demo application and the proxy:
//
//	go run ./examples/direct-upload
//	curl -T bigfile http://127.0.0.1:8080/files/bigfile
//	curl -r 0-99 http://127.0.0.1:8080/files/bigfile
//
// With -s3-endpoint it uses a real S3 endpoint instead (the bucket is
// created if missing):
//
//	go run ./examples/direct-upload -s3-endpoint https://s3.example.com \
//	    -s3-region eu-west-1 -s3-access-key AK -s3-secret-key SK -bucket uploads
//
// -metrics ADDR serves Prometheus metrics at http://ADDR/metrics.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
)

// options are the command's flags.
type options struct {
	listen     string
	store      storeConfig
	signingKey string
	partSize   int64
	maxSize    int64
	formFiles  int
	hashes     string
	metrics    string // address serving /metrics; "" for none
}

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&o.store.Endpoint, "s3-endpoint", "", "S3 endpoint URL (default: start versitygw on a temporary directory)")
	flag.StringVar(&o.store.Region, "s3-region", "us-east-1", "S3 region")
	flag.StringVar(&o.store.AccessKey, "s3-access-key", os.Getenv("AWS_ACCESS_KEY_ID"), "S3 access key (default $AWS_ACCESS_KEY_ID)")
	flag.StringVar(&o.store.SecretKey, "s3-secret-key", os.Getenv("AWS_SECRET_ACCESS_KEY"), "S3 secret key (default $AWS_SECRET_ACCESS_KEY)")
	flag.StringVar(&o.store.Bucket, "bucket", "sluice-uploads", "bucket for the uploads (created if missing)")
	flag.StringVar(&o.signingKey, "signing-key", os.Getenv("SLUICE_SIGNING_KEY"), "HS256 key shared by proxy and application (default $SLUICE_SIGNING_KEY, else random)")
	flag.Int64Var(&o.partSize, "part-size", 8<<20, "multipart part size in bytes (S3 minimum 5 MiB; up to 8 MiB, parts stay in memory)")
	flag.Int64Var(&o.maxSize, "max-size", 5<<30, "maximum size of one uploaded object in bytes")
	flag.IntVar(&o.formFiles, "form-files", 4, "files pre-authorized per form upload")
	flag.StringVar(&o.hashes, "hashes", "md5,sha256", "digests computed while streaming (md5,sha1,sha256,sha512)")
	flag.StringVar(&o.metrics, "metrics", "", telemetry.Usage)
	flag.Parse()
	if err := telemetry.CheckAddr(o.metrics); err != nil {
		fmt.Fprintln(os.Stderr, "direct-upload:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "direct-upload:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.Default()

	if o.store.Endpoint == "" {
		gw, err := startVersitygw()
		if err != nil {
			return err
		}
		defer gw.stop()
		o.store.Endpoint, o.store.AccessKey, o.store.SecretKey = gw.endpoint, gw.access, gw.secret
		fmt.Printf("versitygw (S3) on %s, data in %s\n", gw.endpoint, gw.dir)
	}
	key := []byte(o.signingKey)
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key)
	}
	cfg := appConfig{Store: o.store, SigningKey: key, PartSize: o.partSize, MaxSize: o.maxSize,
		SinglePutMax: min(o.maxSize, 5<<30),
		FormFiles:    o.formFiles, Expires: time.Hour, Hashes: splitList(o.hashes)}
	metrics := &telemetry.Metrics{}
	var merr error
	d, err := start(ctx, cfg, o.listen, log, func(_ *app, proxy http.Handler) http.Handler {
		// start serves its *sluice.Proxy through this.
		if metrics, merr = telemetry.Start(o.metrics, proxy.(*sluice.Proxy), nil); merr != nil {
			metrics = &telemetry.Metrics{}
			return proxy
		}
		return metrics.Handler
	})
	if err != nil || merr != nil {
		if err == nil {
			err = errors.Join(merr, d.shutdown())
		}
		return err
	}
	defer metrics.Close()
	fmt.Printf("direct-upload: open http://%s/ (curl -T bigfile http://%s/files/bigfile)\n", d.addr, d.addr)
	if u := metrics.URL(); u != "" {
		fmt.Printf("direct-upload: metrics at %s\n", u)
	}
	<-ctx.Done()
	fmt.Println("direct-upload: shutting down")
	return d.shutdown()
}

// deployment is the application and the proxy, running.
type deployment struct {
	addr    string // the proxy's
	appAddr string
	app     *app
	proxy   *sluice.Proxy
	srv     *sluice.Server
	appSrv  *http.Server
}

// start creates the bucket, starts the demo application and the proxy in
// front of it, listening on listen. If wrap is not nil, the proxy is
// served through it, and the app is configured by it.
func start(ctx context.Context, cfg appConfig, listen string, log *slog.Logger, wrap func(*app, http.Handler) http.Handler) (*deployment, error) {
	a := newApp(cfg, log)
	if err := ensureBucket(ctx, a.s3, cfg.Store.Bucket); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Store.Bucket, err)
	}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &deployment{app: a, appAddr: appLn.Addr().String()}
	d.appSrv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	go d.appSrv.Serve(appLn)

	d.proxy = newProxy(&url.URL{Scheme: "http", Host: d.appAddr}, cfg, log)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		d.appSrv.Close()
		return nil, err
	}
	d.addr = ln.Addr().String()
	var h http.Handler = d.proxy
	if wrap != nil {
		h = wrap(a, h)
	}
	d.srv = &sluice.Server{Handler: h}
	go d.srv.Serve(ln)
	return d, nil
}

// newProxy is the proxy of this starter: uploads to PUT /files/{name}
// and POST /forms go to object storage (sluice.Upload), downloads from GET
// /files/{name} served from it, everything else passed through.
func newProxy(app *url.URL, cfg appConfig, log *slog.Logger) *sluice.Proxy {
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: app}, Logger: log}
	uploads := &sluice.Upload{
		Preauthorizer: sluice.PreauthorizeUpstream("/authorize", cfg.SigningKey),
		SigningKey:    cfg.SigningKey,
		MaxSize:       cfg.MaxSize,
	}
	p.Handle(routeRawUpload, uploads)
	p.Handle(routeFormUpload, uploads)
	store, _ := url.Parse(cfg.Store.Endpoint)
	p.Handle(routeDownload, &sluice.Sendfile{
		Header:   sendfileHeader,
		AllowURL: func(u *url.URL) bool { return u.Host == store.Host },
	})
	return p
}

func (d *deployment) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	d.proxy.CloseIdleConnections()
	err = errors.Join(err, d.appSrv.Shutdown(ctx))
	d.app.hc.CloseIdleConnections()
	return err
}

// versitygw is a versitygw process serving a temporary directory.
type versitygw struct {
	endpoint, access, secret, dir string
	cmd                           *exec.Cmd
	exited                        chan error
}

const versitygwInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// startVersitygw starts versitygw from PATH (or GOBIN, GOPATH/bin, ~/go/bin)
// with a posix backend in a temporary directory, and waits until it
// listens.
func startVersitygw() (*versitygw, error) {
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		// Where go install puts it: GOBIN, GOPATH/bin, ~/go/bin.
		var dirs []string
		if d := os.Getenv("GOBIN"); d != "" {
			dirs = append(dirs, d)
		}
		if d := os.Getenv("GOPATH"); d != "" {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
		if home, herr := os.UserHomeDir(); herr == nil {
			dirs = append(dirs, filepath.Join(home, "go", "bin"))
		}
		for _, d := range dirs {
			if _, serr := os.Stat(filepath.Join(d, "versitygw")); serr == nil {
				bin = filepath.Join(d, "versitygw")
				break
			}
		}
		if bin == "" {
			return nil, fmt.Errorf("versitygw not found on PATH, in GOBIN or in GOPATH/bin: install it with\n\t%s\nor point -s3-endpoint at an S3 service", versitygwInstall)
		}
	}
	dir, err := os.MkdirTemp("", "direct-upload-s3-")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"meta", "data"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	g := &versitygw{endpoint: "http://127.0.0.1:" + strconv.Itoa(port), access: "directupload",
		secret: "directupload-secret", dir: dir, exited: make(chan error, 1)}
	g.cmd = exec.Command(bin, "--access", g.access, "--secret", g.secret, "--region", "us-east-1",
		"--port", "127.0.0.1:"+strconv.Itoa(port), "posix", "--sidecar", filepath.Join(dir, "meta"), filepath.Join(dir, "data"))
	g.cmd.Stdout, g.cmd.Stderr = os.Stderr, os.Stderr
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return g, nil
		}
		select {
		case err := <-g.exited:
			return nil, fmt.Errorf("versitygw exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, errors.New("versitygw did not start listening within 20s")
		}
	}
}

func (g *versitygw) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	os.RemoveAll(g.dir)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
