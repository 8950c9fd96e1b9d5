package sluice

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is a certificate authority for the TLS tests.
type testPKI struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial atomic.Int64
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{cert: cert, key: key, pool: x509.NewCertPool()}
	p.pool.AddCert(cert)
	p.serial.Store(1)
	return p
}

// issue returns a leaf certificate for cn: a server certificate for
// names (127.0.0.1 and localhost if none), or a client certificate.
func (p *testPKI) issue(t testing.TB, cn string, client bool, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		if len(names) == 0 {
			names = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		tmpl.DNSNames = names
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// writeFiles writes cert and its key as PEM files and returns their paths.
func writeFiles(t testing.TB, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startServer serves srv on a loopback listener (with ServeTLS when tlsOn,
// its TLSConfig holding the certificate) until the test ends, and returns
// the listener.
func startServer(t testing.TB, srv *Server, tlsOn bool) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	done := make(chan error, 1)
	go func() {
		if tlsOn {
			done <- srv.ServeTLS(cl, "", "")
		} else {
			done <- srv.Serve(cl)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v, want http.ErrServerClosed", err)
		}
	})
	return cl
}

// testFront is one way for a client to reach a handler through Server.
type testFront struct {
	name   string
	url    string // base URL
	client *http.Client
	proto  string // the Request.Proto the handler sees
	ln     *countingListener
	pki    *testPKI // the authority of the server's certificate
}

// protocols returns a set of protocols: HTTP/1, HTTP/2 over TLS, h2c.
func protocols(h1, h2, h2c bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(h1)
	p.SetHTTP2(h2)
	p.SetUnencryptedHTTP2(h2c)
	return p
}

// startFronts serves h with two Servers, one TLS (h2 and http/1.1 by
// ALPN) and one cleartext with h2c allowed, and returns the four ways in:
// HTTP/2 and HTTP/1.1 over TLS, h2c with prior knowledge, HTTP/1.1.
// configure, if not nil, edits both Servers before they start.
func startFronts(t testing.TB, h http.Handler, configure func(*Server)) []testFront {
	t.Helper()
	pki := newTestPKI(t)
	cert := pki.issue(t, "server", false)

	tlsSrv := &Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Logger: discardLogger()}
	plain := &Server{Handler: h, Protocols: protocols(true, false, true), Logger: discardLogger()}
	if configure != nil {
		configure(tlsSrv)
		configure(plain)
	}
	tlsLn := startServer(t, tlsSrv, true)
	plainLn := startServer(t, plain, false)

	clientTLS := &tls.Config{RootCAs: pki.pool}
	h2 := &http.Transport{TLSClientConfig: clientTLS, Protocols: protocols(false, true, false), DisableCompression: true}
	h1tls := &http.Transport{TLSClientConfig: clientTLS.Clone(), DisableCompression: true}
	h2c := &http.Transport{Protocols: protocols(false, false, true), DisableCompression: true}
	h1 := &http.Transport{DisableCompression: true}
	t.Cleanup(func() {
		h2.CloseIdleConnections()
		h1tls.CloseIdleConnections()
		h2c.CloseIdleConnections()
		h1.CloseIdleConnections()
	})
	tlsURL := "https://" + tlsLn.Addr().String()
	plainURL := "http://" + plainLn.Addr().String()
	return []testFront{
		{"h2-tls", tlsURL, &http.Client{Transport: h2}, "HTTP/2.0", tlsLn, pki},
		{"h1-tls", tlsURL, &http.Client{Transport: h1tls}, "HTTP/1.1", tlsLn, pki},
		{"h2c", plainURL, &http.Client{Transport: h2c}, "HTTP/2.0", plainLn, pki},
		{"h1", plainURL, &http.Client{Transport: h1}, "HTTP/1.1", plainLn, pki},
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
