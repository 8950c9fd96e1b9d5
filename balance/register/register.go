// Package register is the target's side of self-registration with a
// load balancer built on package balance: the JSON a registration
// carries (Registration) and the loop an upstream application runs next
// to its server to stay registered (Client).
//
// It imports nothing of sluice, so that an application registers itself
// without pulling in the proxy:
//
//	c := &register.Client{
//		Endpoint: "http://lb.internal:8079/register",
//		ID:       "web-1",
//		URL:      "http://10.0.0.5:8080",
//		Secret:   os.Getenv("LB_SECRET"),
//	}
//	go c.Run(ctx) // registers, renews, deregisters when ctx ends
//
// The protocol, served by balance.Registrar: POST a Registration as JSON
// to add or renew the target (200, the stored Registration with the
// granted TTL in the answer); DELETE with {"id": ...} to remove it (204).
// A registration expires unless renewed within its TTL.
package register

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"time"
)

// Registration is the JSON body of a registration request (POST) and of
// the Registrar's answer to it.
type Registration struct {
	// ID names the target in the pool. If empty, the Registrar uses URL.
	ID string `json:"id,omitempty"`

	// URL is the target: scheme (http or https), host and port, and an
	// optional path joined in front of request paths. It is required.
	URL string `json:"url"`

	// Weight is the target's share for weighted policies. If zero, 1.
	Weight int `json:"weight,omitempty"`

	// TTLSeconds is the registration lifetime, in whole seconds: in a
	// request the one asked for (if zero, the Registrar's default), in
	// the answer the one granted, which the Registrar may have capped.
	TTLSeconds int64 `json:"ttl,omitempty"`

	// HealthPath, if not empty, is the path the balancer's active health
	// checks request on this target instead of the pool's: an absolute
	// path without query, at most 256 bytes.
	HealthPath string `json:"health_path,omitempty"`

	// Warning is set in an answer only: it says what of the request was
	// not granted as asked (a TTL capped to the Registrar's maximum).
	// It is ignored in requests.
	Warning string `json:"warning,omitempty"`
}

// maxAnswer bounds the Registrar's answer read by a Client.
const maxAnswer = 4 << 10

// Client keeps one target registered with a load balancer's Registrar:
// the self-registration loop an upstream application runs next to its
// server. Its fields are set before Run and not changed after.
type Client struct {
	// Endpoint is the Registrar's URL, e.g.
	// "http://lb.internal:8079/register". It is required.
	Endpoint string

	// ID names the target in the pool. If empty, the Registrar uses URL.
	ID string

	// URL is the target the balancer sends requests to, as the balancer
	// reaches it, e.g. "http://10.0.0.5:8080". It is required.
	URL string

	// Weight is the target's share for weighted policies. If zero, 1.
	Weight int

	// HealthPath is the path the balancer's health checks request on
	// this target. If empty, the pool's own health check path.
	HealthPath string

	// TTL is the registration lifetime to ask for, rounded up to whole
	// seconds. If zero, the Registrar's default. The registration is
	// renewed every third of the TTL the Registrar granted, which may be
	// shorter than asked (the Registrar's maximum): the Client logs the
	// Registrar's warning then.
	TTL time.Duration

	// Secret, if not empty, is sent as a bearer token (RFC 6750 §2.1), the
	// Registrar's shared secret.
	Secret string

	// HTTPClient sends the registrations. If nil, a client with a 5
	// second timeout whose idle connections are closed when Run returns.
	HTTPClient *http.Client

	// Logger receives registration failures and warnings. If nil,
	// slog.Default().
	Logger *slog.Logger
}

// Run registers the target, renews the registration until ctx is done,
// then removes it (within 5 seconds). Failed registrations are retried
// every second, up to the renewal interval. Run returns nil when ctx is
// done, or an error at once if Endpoint is not an http or https URL or
// URL is empty.
func (c *Client) Run(ctx context.Context) error {
	if u, err := url.Parse(c.Endpoint); err != nil || c.Endpoint == "" || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("register: endpoint %q: want the Registrar's http or https URL", c.Endpoint)
	}
	if c.URL == "" {
		return errors.New("register: no target URL to register")
	}
	client := c.HTTPClient
	if client == nil {
		t := &http.Transport{MaxIdleConnsPerHost: 1}
		defer t.CloseIdleConnections()
		client = &http.Client{Transport: t, Timeout: 5 * time.Second}
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.deregister(dctx, client); err != nil {
			log.Warn("register: deregistration failed", "endpoint", c.Endpoint, "err", err)
		}
	}()
	warned := ""
	for {
		wait := time.Second
		got, err := c.register(ctx, client)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("register: registration failed", "endpoint", c.Endpoint, "err", err)
		default:
			wait = max(time.Duration(got.TTLSeconds)*time.Second/3, 100*time.Millisecond)
			if got.Warning != "" && got.Warning != warned {
				log.Warn("register: registrar warning", "endpoint", c.Endpoint, "warning", got.Warning)
			}
			warned = got.Warning
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// register sends one registration and returns the Registrar's answer.
func (c *Client) register(ctx context.Context, client *http.Client) (Registration, error) {
	reg := Registration{ID: c.ID, URL: c.URL, Weight: c.Weight,
		TTLSeconds: int64(math.Ceil(c.TTL.Seconds())), HealthPath: c.HealthPath}
	body, _ := json.Marshal(reg)
	res, err := c.do(ctx, client, http.MethodPost, body)
	if err != nil {
		return Registration{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return Registration{}, fmt.Errorf("reading the registrar's answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return Registration{}, fmt.Errorf("registrar answered %s: %s", res.Status, bytes.TrimSpace(b))
	}
	var got Registration
	if err := json.Unmarshal(b, &got); err != nil || got.TTLSeconds <= 0 {
		return Registration{}, fmt.Errorf("registrar answer: bad ttl in %q", b)
	}
	return got, nil
}

func (c *Client) deregister(ctx context.Context, client *http.Client) error {
	id := c.ID
	if id == "" {
		id = c.URL
	}
	body, _ := json.Marshal(Registration{ID: id})
	res, err := c.do(ctx, client, http.MethodDelete, body)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		return fmt.Errorf("registrar answered %s", res.Status)
	}
	return nil
}

func (c *Client) do(ctx context.Context, client *http.Client, method string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.Secret)
	}
	return client.Do(req)
}
