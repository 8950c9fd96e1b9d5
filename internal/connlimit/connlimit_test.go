package connlimit

import (
	"io"
	"net"
	"syscall"
	"testing"
)

// A slot goes back once, whichever of the connections sharing it closes,
// however many times.
func TestSlotGoesBackOnce(t *testing.T) {
	l := New(2)
	for range 2 {
		if !l.TryAcquire() {
			t.Fatal("two slots of two not free")
		}
	}
	if l.TryAcquire() {
		t.Fatal("a third slot of two")
	}
	a1, a2 := net.Pipe()
	defer a2.Close()
	c := Wrap(a1, l)
	r := Rewrap(c, a1)
	c.Close()
	c.Close()
	r.Close()
	if got := l.InUse(); got != 1 {
		t.Fatalf("%d slots in use after closing the connections of one, want 1", got)
	}
	stop := make(chan struct{})
	if !l.Acquire(stop, nil) {
		t.Fatal("the freed slot was not taken")
	}
	close(stop)
	if l.Acquire(stop, nil) {
		t.Fatal("Acquire took a slot of a full Limiter")
	}
}

// Conn keeps what servers look for on a *net.TCPConn.
func TestConnKeepsTCPMethods(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	l := New(2)
	l.TryAcquire()
	l.TryAcquire()
	var c net.Conn = Wrap(s, l)
	defer c.Close()
	if _, ok := c.(syscall.Conn); !ok {
		t.Error("no SyscallConn")
	} else if _, err := c.(syscall.Conn).SyscallConn(); err != nil {
		t.Errorf("SyscallConn: %v", err)
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("no ReadFrom")
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	if n, err := d.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after CloseWrite the peer read %d, %v; want EOF", n, err)
	}
	p1, p2 := net.Pipe()
	defer p2.Close()
	pc := Wrap(p1, l)
	defer pc.Close()
	if _, err := pc.SyscallConn(); err == nil {
		t.Error("SyscallConn of a pipe succeeded")
	}
}
