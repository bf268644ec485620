//go:build unix

package edge

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// netpollPoller is the portable poller for Unix systems without epoll (and
// for tests of that path on Linux). It waits for readiness through Go's own
// network poller (syscall.RawConn), which costs a parked goroutine per
// connection: the price of portability.
type netpollPoller struct {
	events chan npEvent
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[*Conn]*npConn
	stop  sync.Once
}

type npConn struct {
	rc      syscall.RawConn
	armRead chan struct{} // capacity 1: the reader may wait again
}

type npEvent struct {
	c  *Conn
	ev event
}

func newNetpollPoller() *netpollPoller {
	return &netpollPoller{
		events: make(chan npEvent, 64),
		done:   make(chan struct{}),
		conns:  make(map[*Conn]*npConn),
	}
}

func (p *netpollPoller) add(c *Conn, out bool) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("connection %T has no file descriptor", c.nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("syscall conn: %w", err)
	}
	nc := &npConn{rc: rc, armRead: make(chan struct{}, 1)}
	p.mu.Lock()
	p.conns[c] = nc
	p.mu.Unlock()
	nc.armRead <- struct{}{}
	p.wg.Add(1)
	go p.waitRead(c, nc)
	if out {
		p.waitWrite(c, nc)
	}
	return nil
}

// detach keeps the net.Conn: this poller waits through Go's netpoller.
func (p *netpollPoller) detach(nc net.Conn) (int, net.Conn, error) {
	fd, err := socketFD(nc)
	return fd, nc, err
}

func (p *netpollPoller) rearm(c *Conn, out bool) error {
	p.mu.Lock()
	nc := p.conns[c]
	p.mu.Unlock()
	if nc == nil {
		return errors.New("connection not registered")
	}
	select {
	case nc.armRead <- struct{}{}:
	default:
	}
	if out {
		p.waitWrite(c, nc)
	}
	return nil
}

func (p *netpollPoller) remove(c *Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	// The waiting goroutines return when the socket closes, right after.
}

// waitRead waits for readability each time the connection is armed. It
// checks the level with poll(2) first, because Go's poller is edge-triggered
// and a worker may leave data unread.
func (p *netpollPoller) waitRead(c *Conn, nc *npConn) {
	defer p.wg.Done()
	for {
		select {
		case <-nc.armRead:
		case <-p.done:
			return
		}
		err := nc.rc.Read(func(fd uintptr) bool { return ready(fd, unix.POLLIN) })
		if !p.deliver(c, evRead) || err != nil {
			return // closed: the worker saw the error when it read
		}
	}
}

func (p *netpollPoller) waitWrite(c *Conn, nc *npConn) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := nc.rc.Write(func(fd uintptr) bool { return ready(fd, unix.POLLOUT) }); err != nil {
			return
		}
		p.deliver(c, evWrite)
	}()
}

func (p *netpollPoller) deliver(c *Conn, ev event) bool {
	select {
	case p.events <- npEvent{c, ev}:
		return true
	case <-p.done:
		return false
	}
}

func ready(fd uintptr, what int16) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: what}}
	n, err := unix.Poll(fds, 0)
	return err != nil || (n > 0 && fds[0].Revents != 0)
}

func (p *netpollPoller) run(handle func(*Conn, event)) {
	for {
		select {
		case e := <-p.events:
			handle(e.c, e.ev)
		case <-p.done:
			return
		}
	}
}

func (p *netpollPoller) close() error {
	p.stop.Do(func() { close(p.done) })
	p.wg.Wait()
	return nil
}
