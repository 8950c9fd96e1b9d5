// Command wsload drives WebSocket echo load in a closed loop: each of -c
// connections sends a masked binary message of -size bytes, waits for the
// echo, compares it byte for byte, and sends the next, until -warmup plus
// -d have passed. Only round trips that start after the warm-up and end
// before the end count toward the rate and the percentiles. It prints one
// JSON object.
//
// Every read and write has a deadline, so it always ends within about
// -warmup + -d + 5 s.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/sluiceproxy/sluice/bench/internal/hist"
)

type report struct {
	URL            string  `json:"url"`
	Conns          int     `json:"conns"`
	ConnsOK        int     `json:"conns_ok"`
	DialErrors     int     `json:"dial_errors"`
	IOErrors       int64   `json:"io_errors"`
	Mismatches     int64   `json:"mismatches"`
	Size           int     `json:"msg_size"`
	RoundTrips     uint64  `json:"round_trips"`       // measured
	AllRoundTrips  int64   `json:"total_round_trips"` // warm-up included
	Seconds        float64 `json:"duration_s"`
	RoundTripsPerS float64 `json:"rt_per_s"`
	P50us          float64 `json:"p50_us"`
	P90us          float64 `json:"p90_us"`
	P99us          float64 `json:"p99_us"`
	MaxUs          float64 `json:"max_us"`
	MeanUs         float64 `json:"mean_us"`
	FirstDialError string  `json:"first_dial_error,omitempty"`
	FirstIOError   string  `json:"first_io_error,omitempty"`
}

type conn struct {
	net.Conn
	r io.Reader // the handshake's buffered reader when it holds bytes
}

func main() {
	target := flag.String("url", "ws://127.0.0.1:19080/ws", "WebSocket URL (loopback only)")
	n := flag.Int("c", 64, "connections")
	dur := flag.Duration("d", 10*time.Second, "measured duration")
	warm := flag.Duration("warmup", time.Second, "unmeasured load before -d")
	size := flag.Int("size", 128, "message size in bytes")
	dialTimeout := flag.Duration("dial-timeout", 5*time.Second, "dial and handshake timeout per connection")
	flag.Parse()
	if err := loopbackOnly(*target); err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(2)
	}
	msg := make([]byte, *size)
	for i := range msg {
		msg[i] = 'A' + byte(i%26)
	}
	rep := report{URL: *target, Conns: *n, Size: *size}

	// Dial every connection first, 32 at a time, then load them together.
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		conns []conn
	)
	sem := make(chan struct{}, 32)
	dialer := ws.Dialer{Timeout: *dialTimeout}
	for range *n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), *dialTimeout)
			defer cancel()
			c, br, _, err := dialer.Dial(ctx, *target)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.DialErrors++
				if rep.FirstDialError == "" {
					rep.FirstDialError = err.Error()
				}
				return
			}
			cc := conn{Conn: c, r: c}
			if br != nil {
				cc.r = br
			}
			conns = append(conns, cc)
		}()
	}
	wg.Wait()
	rep.ConnsOK = len(conns)

	from := time.Now().Add(*warm)
	end := from.Add(*dur)
	var ioErrors, mismatches, all atomic.Int64
	var firstErr atomic.Pointer[string]
	hs := make([]hist.H, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func(h *hist.H) {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(end.Add(5 * time.Second))
			bw := bufio.NewWriterSize(c, 4096)
			out, in := make([]byte, len(msg)), make([]byte, len(msg))
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				err := roundTrip(bw, c.r, msg, out, in)
				if err != nil {
					ioErrors.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					return
				}
				t1 := time.Now()
				all.Add(1)
				if !bytes.Equal(in, msg) {
					mismatches.Add(1)
				}
				if t0.After(from) && t1.Before(end) {
					h.Record(t1.Sub(t0))
				}
			}
			ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
		}(&hs[i])
	}
	wg.Wait()

	var total hist.H
	for i := range hs {
		total.Merge(&hs[i])
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	rep.IOErrors, rep.Mismatches, rep.AllRoundTrips = ioErrors.Load(), mismatches.Load(), all.Load()
	if p := firstErr.Load(); p != nil {
		rep.FirstIOError = *p
	}
	rep.RoundTrips = total.Count()
	rep.Seconds = dur.Seconds()
	rep.RoundTripsPerS = float64(total.Count()) / dur.Seconds()
	rep.P50us, rep.P90us, rep.P99us = us(total.Quantile(0.5)), us(total.Quantile(0.9)), us(total.Quantile(0.99))
	rep.MaxUs, rep.MeanUs = us(total.Max()), us(total.Mean())
	json.NewEncoder(os.Stdout).Encode(rep)
	if rep.ConnsOK == 0 {
		os.Exit(1)
	}
}

// roundTrip sends msg (masked, through out) and reads the echo into in.
func roundTrip(bw *bufio.Writer, r io.Reader, msg, out, in []byte) error {
	copy(out, msg)
	mask := ws.NewMask()
	ws.Cipher(out, mask, 0)
	if err := ws.WriteHeader(bw, ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: mask, Length: int64(len(out))}); err != nil {
		return err
	}
	if _, err := bw.Write(out); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	h, err := ws.ReadHeader(r)
	if err != nil {
		return err
	}
	if h.Length != int64(len(in)) {
		return fmt.Errorf("echo of %d bytes (opcode %v), want %d", h.Length, h.OpCode, len(in))
	}
	if _, err := io.ReadFull(r, in); err != nil {
		return err
	}
	if h.Masked {
		ws.Cipher(in, h.Mask, 0)
	}
	return nil
}

func loopbackOnly(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	ips, err := net.LookupIP(u.Hostname())
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("refusing %s: not a loopback address (%s)", u.Host, ip)
		}
	}
	return nil
}
