//go:build linux

package gobwasepoll

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// readEvents arms a connection for one readability (or hang-up) report.
// Level-triggered: a frame left in the socket after a read re-fires on re-arm.
const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// poller is the epoll loop. Its methods are safe for concurrent use; run is
// called once, in its own goroutine.
type poller struct {
	log    *slog.Logger
	epfd   int
	wakefd int           // eventfd written by close to end run
	done   chan struct{} // closed when run returns

	mu     sync.Mutex
	closed bool
	conns  map[int]*conn // by fd
}

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gobwasepoll: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("gobwasepoll: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("gobwasepoll: epoll_ctl eventfd: %w", err)
	}
	return &poller{
		log:    log,
		epfd:   epfd,
		wakefd: wakefd,
		done:   make(chan struct{}),
		conns:  make(map[int]*conn),
	}, nil
}

// fdOf returns nc's descriptor without dup'ing it (File would, and would make
// it blocking).
func fdOf(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("gobwasepoll: %T has no file descriptor", nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	if err := raw.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return 0, err
	}
	return fd, nil
}

func event(c *conn) *unix.EpollEvent {
	return &unix.EpollEvent{Events: readEvents, Fd: int32(c.fd), Pad: int32(c.gen)}
}

// add registers c. The caller holds c.mu and has checked c is open.
func (p *poller) add(c *conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPollerClosed
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, event(c)); err != nil {
		return err
	}
	p.conns[c.fd] = c
	return nil
}

// rearm re-enables c's one-shot registration after a read. The caller holds
// c.mu and has checked c is open, so c.fd is still c's.
func (p *poller) rearm(c *conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPollerClosed
	}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, event(c))
}

// remove unregisters c. The caller holds c.mu and closes c.nc right after.
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	if !p.closed {
		// ENOENT when c was never added; nothing to do either way.
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	}
}

// run waits for events and hands each ready connection to dispatch, until
// close. It never reads: dispatch schedules the read on the worker pool.
func (p *poller) run(dispatch func(*conn)) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			p.log.Error("epoll_wait", "err", err)
			return
		}
		for i := range n {
			fd, gen := int(events[i].Fd), uint32(events[i].Pad)
			if fd == p.wakefd {
				return
			}
			p.mu.Lock()
			c := p.conns[fd]
			p.mu.Unlock()
			// A stale event for a closed connection whose fd was reused
			// carries the old generation.
			if c != nil && c.gen == gen {
				dispatch(c)
			}
		}
	}
}

// close stops run and waits for it, then releases the descriptors.
func (p *poller) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	var one = [8]byte{1}
	if _, err := unix.Write(p.wakefd, one[:]); err != nil {
		p.log.Error("eventfd write", "err", err)
	}
	<-p.done
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wakefd)
}
