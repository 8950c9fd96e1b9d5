// Package realserver starts the real servers that sluice's tests run
// against (redis-server, versitygw), each on a free loopback port in a
// temporary directory, stopped when the test ends.
//
// When a server's binary is missing the test is skipped with the command
// that installs it, unless SLUICE_REQUIRE_REAL=1 is set (as .ci/run does):
// then the test fails, so a CI run can never pass by skipping.
package realserver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Redis is a running redis-server.
type Redis struct {
	Addr string // host:port on 127.0.0.1
}

// StartRedis starts redis-server for the test (no persistence).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := lookPath(t, "redis-server", "apt-get install redis-server")
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--protected-mode", "no")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start(t, cmd, addr)
	return &Redis{Addr: addr}
}

// S3 is a running versitygw with a posix backend.
type S3 struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	Region    string
	Dir       string // the posix backend's root: buckets are directories
}

// StartS3 starts versitygw for the test, serving the directory Dir.
// Buckets are created by the test through the S3 API (or as directories).
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := lookPath(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@latest")
	port := freePort(t)
	dir := t.TempDir()
	s := &S3{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "sluicetest",
		SecretKey: "sluicetestsecret",
		Region:    "us-east-1",
		Dir:       filepath.Join(dir, "data"),
	}
	for _, d := range []string{s.Dir, filepath.Join(dir, "meta")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin,
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region,
		"--port", "127.0.0.1:"+strconv.Itoa(port),
		// Metadata (ETags of parts, which CompleteMultipartUpload checks)
		// goes to sidecar files: --nometa would make every multipart
		// completion fail, and xattrs are not available everywhere.
		"posix", "--sidecar", filepath.Join(dir, "meta"), s.Dir)
	cmd.Dir = dir
	start(t, cmd, "127.0.0.1:"+strconv.Itoa(port))
	return s
}

// LookPath returns the path of the program name for a test that runs it
// (curl, h2load), looking on PATH and where go install puts binaries. A
// missing program skips the test with the install command, or fails it
// when SLUICE_REQUIRE_REAL=1.
func LookPath(t testing.TB, name, install string) string {
	t.Helper()
	return lookPath(t, name, install)
}

func lookPath(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// go install puts binaries in GOBIN or GOPATH/bin, often not on PATH.
	for _, dir := range goBins() {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found; install it with: %s (or run .ci/run)", name, install)
	if os.Getenv("SLUICE_REQUIRE_REAL") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func goBins() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

var portMu sync.Mutex

func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs cmd, waits until addr accepts connections (at most 20 s) and
// registers a cleanup that kills it.
func start(t testing.TB, cmd *exec.Cmd, addr string) {
	t.Helper()
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = &lockedWriter{w: &out, mu: &mu}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s exited before listening: %v\n%s", filepath.Base(cmd.Path), err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s not listening on %s after 20s:\n%s", filepath.Base(cmd.Path), addr, out.String())
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
