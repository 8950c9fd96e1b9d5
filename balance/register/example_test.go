package register_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/sluiceproxy/sluice/balance"
	"github.com/sluiceproxy/sluice/balance/register"
)

// A target keeps itself registered with the balancer's Registrar while
// its context lasts, and leaves the pool when it ends.
func ExampleClient() {
	pool := &balance.Pool{}
	registrar := httptest.NewServer(&balance.Registrar{Pool: pool, Secret: "s3cret"})
	defer registrar.Close()

	ctx, cancel := context.WithCancel(context.Background())
	c := &register.Client{
		Endpoint: registrar.URL + "/register",
		ID:       "web-1",
		URL:      "http://127.0.0.1:9001",
		Secret:   "s3cret",
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	for len(pool.Stats()) == 0 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("registered:", pool.Stats()[0].ID)
	cancel()
	if err := <-done; err != nil {
		fmt.Println(err)
	}
	fmt.Println("members after Run returned:", len(pool.Stats()))
	// Output:
	// registered: web-1
	// members after Run returned: 0
}
