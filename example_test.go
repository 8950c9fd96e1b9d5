package sluice_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
)

// get fetches url and returns the status and body as one line.
func get(url string) string {
	res, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(b)))
}

func ExampleProxy() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s from %s", r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	// Capture one URL; everything else passes through.
	p.HandleFunc("GET /status", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
		_, err := io.WriteString(w, "proxy is fine")
		return err
	})
	front := httptest.NewServer(p)
	defer front.Close()

	fmt.Println(get(front.URL + "/status"))
	fmt.Println(get(front.URL + "/hello"))
	// Output:
	// 200 proxy is fine
	// 200 app saw /hello from 127.0.0.1
}

func ExampleSingleHost() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s?%s", r.URL.Path, r.URL.RawQuery)
	}))
	defer app.Close()
	// The target's path is joined in front, its query merged.
	target, _ := url.Parse(app.URL + "/v2?key=k")
	front := httptest.NewServer(&sluice.Proxy{Director: &sluice.SingleHost{Target: target}})
	defer front.Close()

	fmt.Println(get(front.URL + "/users?page=2"))
	// Output:
	// 200 /v2/users?key=k&page=2
}

func ExamplePrefixDirector() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "api %s", r.URL.Path)
	}))
	defer api.Close()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web %s", r.URL.Path)
	}))
	defer web.Close()
	apiURL, _ := url.Parse(api.URL)
	webURL, _ := url.Parse(web.URL)

	var routes sluice.PrefixDirector
	routes.Add("/api/", apiURL, sluice.PrefixOptions{StripPrefix: true}).
		Add("/", webURL, sluice.PrefixOptions{})
	front := httptest.NewServer(&sluice.Proxy{Director: &routes})
	defer front.Close()

	fmt.Println(get(front.URL + "/api/users/7"))
	fmt.Println(get(front.URL + "/index.html"))
	// Output:
	// 200 api /users/7
	// 200 web /index.html
}

func ExampleProxy_fallback() {
	// Wrap an existing handler: the proxy forwards /api/ and the
	// application serves the rest itself.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from upstream")
	}))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from the application")
	})

	p := &sluice.Proxy{Fallback: app}
	p.AddRoute(sluice.Route{Pattern: "/api/", Director: &sluice.SingleHost{Target: target}})
	front := httptest.NewServer(p)
	defer front.Close()

	fmt.Println(get(front.URL + "/api/x"))
	fmt.Println(get(front.URL + "/home"))
	// Output:
	// 200 from upstream
	// 200 from the application
}

func ExampleAuthorizerFunc() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-User"))
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	p := &sluice.Proxy{
		Director: &sluice.SingleHost{Target: target},
		Authorizer: sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
			if pr.In.URL.Query().Get("token") != "secret" {
				return sluice.Deny(http.StatusUnauthorized, "no entry"), nil
			}
			pr.Out.Header.Set("X-User", "alice") // identity set by the proxy
			return sluice.Allow, nil
		}),
	}
	front := httptest.NewServer(p)
	defer front.Close()

	fmt.Println(get(front.URL + "/"))
	fmt.Println(get(front.URL + "/?token=secret"))
	// Output:
	// 401 no entry
	// 200 hello alice
}

func ExampleProxyRequest_RoundTrip() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "lower case")
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	p.HandleFunc("GET /shout", func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
		res, err := pr.RoundTrip() // same engine, pool and error mapping
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, strings.ToUpper(string(b)))
		return err
	})
	front := httptest.NewServer(p)
	defer front.Close()

	fmt.Println(get(front.URL + "/shout"))
	// Output:
	// 200 LOWER CASE
}

func ExampleStatusFor() {
	fmt.Println(sluice.StatusFor(sluice.ErrNoUpstream))
	fmt.Println(sluice.StatusFor(&sluice.Error{Status: 413, Err: io.ErrShortBuffer}))
	// Output:
	// 503
	// 413
}

func ExampleServe() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	defer p.CloseIdleConnections()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background()) // signal.NotifyContext in a real program
	done := make(chan error, 1)
	go func() { done <- sluice.Serve(ctx, &http.Server{Handler: p}, ln, 5*time.Second) }()

	fmt.Println(get("http://" + ln.Addr().String() + "/"))
	stop() // graceful: in-flight requests finish, tunnels get close 1001
	fmt.Println("serve returned", <-done)
	// Output:
	// 200 hello
	// serve returned <nil>
}

// Server serves a Proxy (or any handler) over HTTP/1.1 with sluice's own
// connection handling; Shutdown ends it gracefully.
func ExampleServer() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s", r.URL.Path)
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)
	proxy := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	defer proxy.CloseIdleConnections()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &sluice.Server{Handler: proxy}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	fmt.Println(get("http://" + ln.Addr().String() + "/hello"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println(srv.Shutdown(ctx), <-done)
	// Output:
	// 200 app saw /hello
	// <nil> http: Server closed
}
