package park

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// Supported reports whether Start can park a connection here.
const Supported = true

var poller struct {
	once sync.Once
	fd   int
	err  error
}

// Start parks the descriptor of rc until it is readable (bytes, the
// peer's close, an error) or timeout passes, then runs fn. The descriptor
// is watched in level-triggered one-shot mode: bytes that arrived before
// Start wake it at once. It is an error to Start a descriptor that is
// parked already. The caller must keep the connection open while the
// watch is pending, and Stop it before closing the connection.
func Start(rc syscall.RawConn, timeout time.Duration, fn func(ready bool)) (*Watch, error) {
	poller.once.Do(startPoller)
	if poller.err != nil {
		return nil, poller.err
	}
	w := &Watch{fn: fn}
	watches.add(w, timeout)
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(w.id)),
		Pad:    int32(uint32(w.id >> 32)),
	}
	var ctlErr error
	// Control holds the descriptor open: it cannot be closed, and its
	// number reused by another connection, during the call.
	err := rc.Control(func(fd uintptr) {
		// A descriptor parked before stays in the epoll set (disarmed)
		// until it is closed: re-arm it; the first time, add it.
		ctlErr = syscall.EpollCtl(poller.fd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(ctlErr, syscall.ENOENT) {
			ctlErr = syscall.EpollCtl(poller.fd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		w.Stop()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return w, nil
}

func startPoller() {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		poller.err = os.NewSyscallError("epoll_create1", err)
		return
	}
	poller.fd = fd
	go poll(fd)
}

// poll waits for parked descriptors for the life of the process. It
// blocks in epoll_wait on a thread of its own; the runtime hands its P to
// other goroutines meanwhile.
func poll(epfd int) {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			// Nothing else can fail on a valid epoll descriptor: stop
			// waking, and let every watch end by its timeout.
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if w := watches.get(id); w != nil {
				w.fire(true)
			}
		}
	}
}
