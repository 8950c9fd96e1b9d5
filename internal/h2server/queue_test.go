package h2server

import (
	"errors"
	"net"
	"testing"
)

// A Queue hands pushed connections to Accept until it is closed; then
// Accept fails with net.ErrClosed and Push leaves the connection to its
// caller.
func TestQueue(t *testing.T) {
	q := NewQueue(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	pushed := make(chan bool)
	go func() { pushed <- q.Push(a) }()
	if c, err := q.Accept(); err != nil || c != a {
		t.Fatalf("Accept: %v, %v", c, err)
	}
	if !<-pushed {
		t.Error("Push of an accepted connection reported false")
	}
	if q.Addr().String() != "127.0.0.1:1" {
		t.Errorf("Addr %v", q.Addr())
	}
	q.Close()
	q.Close() // twice is fine
	if _, err := q.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if q.Push(b) {
		t.Error("Push after Close reported true")
	}
}
