package edge

import (
	"fmt"
	"net"
	"syscall"
)

// poller tells the Server which connections are readable or writable.
//
// Registrations are one-shot: after a connection's event is delivered, the
// poller reports nothing more for it until rearm, so only one worker ever
// handles a connection at a time. All methods but run and close are called
// with the Conn's mutex held.
type poller interface {
	// add registers c, waiting for readability (and writability if out).
	add(c *Conn, out bool) error
	// rearm waits for c's next event.
	rearm(c *Conn, out bool) error
	// remove forgets c; it is called before the socket is closed.
	remove(c *Conn)
	// run delivers events to handle until close; handle may block, which
	// holds back further events (backpressure).
	run(handle func(c *Conn, ev event))
	// close stops run.
	close() error
}

// event is what a poller reports about a connection.
type event uint8

const (
	evRead  event = 1 << iota // readable, or hung up, or in error
	evWrite                   // writable
)

// socketFD returns the socket's file descriptor without duplicating it or
// changing its blocking mode.
func socketFD(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("connection %T has no file descriptor", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("syscall conn: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return 0, fmt.Errorf("socket fd: %w", err)
	}
	return fd, nil
}
