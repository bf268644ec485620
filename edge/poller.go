package edge

import (
	"fmt"
	"net"
	"syscall"
)

// poller tells the Server which connections are readable or writable.
//
// A poller may deliver a connection's events while a worker handles it;
// the Server's busy flag queues them, so one worker at a time handles a
// connection. After handling, the Server calls rearm (which a one-shot
// poller needs and an edge-triggered one ignores). All methods but run,
// close and detach are called with the Conn's mutex held.
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
	// detach takes an upgraded connection's socket: it returns the file
	// descriptor the Conn uses and the net.Conn to keep, if the poller
	// needs one (nil when the descriptor is all there is).
	detach(nc net.Conn) (fd int, keep net.Conn, err error)
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
