package telemetry

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// Off, the Proxy is served as it is: no listener, no instrumentation.
func TestOff(t *testing.T) {
	p := &sluice.Proxy{}
	m, err := Start("", p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Handler != http.Handler(p) || m.URL() != "" || p.OnExchange != nil || p.OnAttempt != nil {
		t.Errorf("metrics off: handler %T, URL %q, hooks set %v", m.Handler, m.URL(), p.OnExchange != nil)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
}

// On, GET /metrics answers on the listener, and Close ends it.
func TestOn(t *testing.T) {
	leaktest.Check(t)
	p := &sluice.Proxy{}
	m, err := Start("127.0.0.1:0", p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.OnExchange == nil || m.Handler == http.Handler(p) {
		t.Error("the Proxy is not instrumented")
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get(m.URL())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET %s: %s %s", m.URL(), res.Status, res.Header.Get("Content-Type"))
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if _, err := http.Get(m.URL()); err == nil {
		t.Error("the listener still answers after Close")
	}
}

func TestCheckAddr(t *testing.T) {
	for addr, ok := range map[string]bool{"": true, "127.0.0.1:9464": true, ":9464": true, "9464": false, "nonsense": false} {
		if err := CheckAddr(addr); (err == nil) != ok {
			t.Errorf("CheckAddr(%q) = %v", addr, err)
		}
	}
}
