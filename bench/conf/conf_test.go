package conf

import (
	"regexp"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	got := Render("x -listen {ADDR} -u {UPSTREAM} {PORT} {UNKNOWN}", map[string]string{
		"ADDR": "127.0.0.1:1", "UPSTREAM": "http://127.0.0.1:2", "PORT": "1"})
	if want := "x -listen 127.0.0.1:1 -u http://127.0.0.1:2 1 {UNKNOWN}"; got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

// The TLS variant of each config must keep every setting of the plain one;
// only the listening line may differ.
func TestTLSVariantsKeepPlainSettings(t *testing.T) {
	for plain, withTLS := range map[string]string{
		"nginx-proxy.conf.tmpl":    "nginx-proxy-tls.conf.tmpl",
		"nginx-upstream.conf.tmpl": "nginx-upstream-tls.conf.tmpl",
		"haproxy.cfg.tmpl":         "haproxy-tls.cfg.tmpl",
	} {
		a, err := Read(plain)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Read(withTLS)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, l := range strings.Split(b, "\n") {
			have[strings.TrimSpace(l)] = true
		}
		for _, l := range strings.Split(a, "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "listen ") || strings.HasPrefix(l, "bind ") {
				continue
			}
			if !have[l] {
				t.Errorf("%s has %q, %s does not", plain, l, withTLS)
			}
		}
	}
}

// Every placeholder a template uses must be one benchrun fills in.
func TestPlaceholdersKnown(t *testing.T) {
	known := map[string]bool{"PORT": true, "ADDR": true, "UPORT": true, "UADDR": true, "UPSTREAM": true,
		"WORKERS": true, "RUNDIR": true, "NOFILE": true, "MAXCONN": true, "WORKERCONN": true,
		"CERT": true, "KEY": true, "CERTKEY": true, "SMALLBODY": true}
	ents, err := files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`\{([A-Z]+)\}`)
	for _, e := range ents {
		text, _ := Read(e.Name())
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			if !known[m[1]] {
				t.Errorf("%s uses {%s}, which benchrun does not fill in", e.Name(), m[1])
			}
		}
	}
}
