// Command idleconns opens -n connections to a server and leaves them idle
// while the benchmark measures the server's memory. With -mode http each
// connection first gets one keep-alive GET -path; with -mode ws it is
// upgraded to WebSocket on -path and echoes one message (package idle).
//
// It talks to the benchmark runner on stdout and stdin:
//
//	{"phase":"open","opened":N,...}    every connection is open and idle
//	(the runner measures, then closes our stdin, or -hold passes)
//	{"phase":"done","alive":K,...}     how many the server still kept
//
// The whole run ends within -hold plus a few seconds.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/bench/internal/idle"
)

type opened struct {
	Phase      string  `json:"phase"`
	Mode       string  `json:"mode"`
	Wanted     int     `json:"wanted"`
	Opened     int     `json:"opened"`
	Failed     int     `json:"failed"`
	Seconds    float64 `json:"open_s"`
	FirstError string  `json:"first_error,omitempty"`
}

type done struct {
	Phase  string `json:"phase"`
	Alive  int    `json:"alive"`
	Closed int    `json:"closed"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:19080", "server ip:port (loopback only)")
	mode := flag.String("mode", "http", "http (one keep-alive GET each) or ws (WebSocket upgrade and one echo each)")
	path := flag.String("path", "", "path to request (default /small, or /ws with -mode ws)")
	n := flag.Int("n", 5000, "connections to open")
	parallel := flag.Int("concurrency", 64, "connections being opened at once")
	hold := flag.Duration("hold", 60*time.Second, "keep the connections at most this long")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintln(os.Stderr, "idleconns: -addr must be a loopback ip:port")
		os.Exit(2)
	}
	open := idle.OpenHTTP
	switch *mode {
	case "http":
		if *path == "" {
			*path = "/small"
		}
	case "ws":
		open = idle.OpenWebSocket
		if *path == "" {
			*path = "/ws"
		}
	default:
		fmt.Fprintln(os.Stderr, "idleconns: -mode must be http or ws")
		os.Exit(2)
	}
	deadline := time.Now().Add(*hold)

	rep := opened{Phase: "open", Mode: *mode, Wanted: *n}
	conns := make([]net.Conn, *n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, *parallel)
	t0 := time.Now()
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := open(*addr, *path, 10*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Failed++
				if rep.FirstError == "" {
					rep.FirstError = err.Error()
				}
				return
			}
			conns[i] = c
			rep.Opened++
		}()
	}
	wg.Wait()
	rep.Seconds = time.Since(t0).Seconds()
	json.NewEncoder(os.Stdout).Encode(rep)

	released := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(released)
	}()
	select {
	case <-released:
	case <-time.After(time.Until(deadline)):
	}
	res := done{Phase: "done"}
	for _, c := range conns {
		if c == nil {
			continue
		}
		if idle.Alive(c) {
			res.Alive++
		} else {
			res.Closed++
		}
		c.Close()
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
