//go:build !linux

package park

import (
	"errors"
	"syscall"
	"time"
)

// Supported reports whether Start can park a connection here.
const Supported = false

// Start is not supported on this system: connections wait on goroutines.
func Start(rc syscall.RawConn, timeout time.Duration, fn func(ready bool)) (*Watch, error) {
	return nil, errors.New("park: not supported on this system")
}
