//go:build linux

package park

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection and the raw
// connection of the server's end.
func pair(t *testing.T) (client, server net.Conn, rc syscall.RawConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	rc, err = server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return client, server, rc
}

// start parks rc and returns a channel that gets fn's argument.
func start(t *testing.T, rc syscall.RawConn, timeout time.Duration) (*Watch, chan bool) {
	t.Helper()
	got := make(chan bool, 2)
	w, err := Start(rc, timeout, func(ready bool) { got <- ready })
	if err != nil {
		t.Fatal(err)
	}
	return w, got
}

func wait(t *testing.T, got chan bool, want bool) {
	t.Helper()
	select {
	case ready := <-got:
		if ready != want {
			t.Fatalf("fn(%v), want fn(%v)", ready, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("fn did not run (want fn(%v))", want)
	}
	select {
	case ready := <-got:
		t.Fatalf("fn ran twice (then with %v)", ready)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestWakes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		event func(client net.Conn)
	}{
		{"bytes", func(c net.Conn) { c.Write([]byte("GET")) }},
		{"close", func(c net.Conn) { c.Close() }},
		{"half close", func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, _, rc := pair(t)
			_, got := start(t, rc, time.Hour)
			tt.event(client)
			wait(t, got, true)
			if n := Len(); n != 0 {
				t.Errorf("%d watches left", n)
			}
		})
	}
}

// Bytes that came before Start wake the watch at once (level-triggered).
func TestBytesBeforeStart(t *testing.T) {
	client, _, rc := pair(t)
	client.Write([]byte("x"))
	time.Sleep(10 * time.Millisecond) // let the segment arrive
	_, got := start(t, rc, time.Hour)
	wait(t, got, true)
}

func TestTimeout(t *testing.T) {
	_, _, rc := pair(t)
	_, got := start(t, rc, 20*time.Millisecond)
	wait(t, got, false)
}

func TestStop(t *testing.T) {
	client, _, rc := pair(t)
	w, got := start(t, rc, 50*time.Millisecond)
	if !w.Stop() {
		t.Fatal("Stop of a pending watch reported false")
	}
	if w.Stop() {
		t.Error("a second Stop reported true")
	}
	client.Write([]byte("x"))
	select {
	case ready := <-got:
		t.Fatalf("fn(%v) ran after Stop", ready)
	case <-time.After(100 * time.Millisecond):
	}
	if n := Len(); n != 0 {
		t.Errorf("%d watches left", n)
	}
}

// A descriptor parked again (re-armed, not added) wakes again; a watch
// stopped before is not woken by the new bytes.
func TestParkAgain(t *testing.T) {
	client, server, rc := pair(t)
	old, oldGot := start(t, rc, time.Hour)
	old.Stop()
	for i := range 3 {
		_, got := start(t, rc, time.Hour)
		client.Write([]byte{byte('a' + i)})
		wait(t, got, true)
		buf := make([]byte, 1)
		if _, err := server.Read(buf); err != nil || buf[0] != byte('a'+i) {
			t.Fatalf("read %q, %v", buf, err)
		}
	}
	select {
	case <-oldGot:
		t.Fatal("a stopped watch ran")
	default:
	}
}

func TestClosedConnection(t *testing.T) {
	_, server, rc := pair(t)
	server.Close()
	if _, err := Start(rc, time.Hour, func(bool) {}); err == nil {
		t.Fatal("Start on a closed connection succeeded")
	}
	if n := Len(); n != 0 {
		t.Errorf("%d watches left", n)
	}
}

// Many watches at once, woken in any order, each exactly once.
func TestMany(t *testing.T) {
	const n = 200
	got := make(chan int, 2*n)
	clients := make([]net.Conn, n)
	for i := range n {
		client, _, rc := pair(t)
		clients[i] = client
		if _, err := Start(rc, time.Hour, func(bool) { got <- i }); err != nil {
			t.Fatal(err)
		}
	}
	for i := n - 1; i >= 0; i-- {
		clients[i].Write([]byte("x"))
	}
	seen := make([]bool, n)
	for range n {
		select {
		case i := <-got:
			if seen[i] {
				t.Fatalf("watch %d ran twice", i)
			}
			seen[i] = true
		case <-time.After(10 * time.Second):
			t.Fatal("not every watch ran")
		}
	}
}
