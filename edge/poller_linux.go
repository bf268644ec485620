//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// epollPoller is the Linux poller: one epoll instance, one goroutine waiting
// on it, edge-triggered registrations made once. A connection reports an
// edge when new data arrives or, after a write hit EAGAIN, when room
// frees up; the Server's busy flag keeps one worker per connection, and
// workers read until EAGAIN. Nothing is re-armed: no epoll_ctl per event.
type epollPoller struct {
	epfd   int
	wakefd int // an eventfd that wakes run for close

	mu    sync.RWMutex
	conns []*Conn // by file descriptor

	closeOnce sync.Once
}

func newPoller(portable bool) (poller, error) {
	if portable {
		return newNetpollPoller(), nil
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	return &epollPoller{epfd: epfd, wakefd: wakefd}, nil
}

// epollEvents is every registration's mask.
const epollEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

func (p *epollPoller) add(c *Conn, _ bool) error {
	p.mu.Lock()
	if c.fd >= len(p.conns) {
		grown := make([]*Conn, max(c.fd+1, 2*len(p.conns), 1024))
		copy(grown, p.conns)
		p.conns = grown
	}
	p.conns[c.fd] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: epollEvents, Fd: int32(c.fd), Pad: int32(c.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.forget(c)
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// rearm does nothing: registrations are edge-triggered and permanent.
func (p *epollPoller) rearm(*Conn, bool) error { return nil }

func (p *epollPoller) remove(c *Conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil) // fails harmlessly if never added
	p.forget(c)
}

func (p *epollPoller) forget(c *Conn) {
	p.mu.Lock()
	if c.fd < len(p.conns) && p.conns[c.fd] == c {
		p.conns[c.fd] = nil
	}
	p.mu.Unlock()
}

// detach duplicates the socket (keeping it non-blocking: the flag belongs
// to the shared open file) and closes Go's net.Conn, which frees its
// netFD, addresses and netpoller registration: the edge only ever reads
// and writes the descriptor with system calls.
func (p *epollPoller) detach(nc net.Conn) (int, net.Conn, error) {
	fd, err := socketFD(nc)
	if err != nil {
		return 0, nil, err
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("dup socket: %w", err)
	}
	if err := nc.Close(); err != nil {
		unix.Close(dup)
		return 0, nil, fmt.Errorf("release net.Conn: %w", err)
	}
	return dup, nil, nil
}

func (p *epollPoller) run(handle func(*Conn, event)) {
	defer unix.Close(p.wakefd)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // the epoll fd was closed
		}
		for i := range n {
			e := &events[i]
			if int(e.Fd) == p.wakefd {
				return
			}
			var c *Conn
			p.mu.RLock()
			if int(e.Fd) < len(p.conns) {
				c = p.conns[e.Fd]
			}
			p.mu.RUnlock()
			if c == nil || c.gen != uint32(e.Pad) {
				continue // a connection closed while its event was in flight
			}
			var ev event
			if e.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				ev |= evRead
			}
			if e.Events&unix.EPOLLOUT != 0 {
				ev |= evWrite
			}
			handle(c, ev)
		}
	}
}

func (p *epollPoller) close() error {
	var err error
	p.closeOnce.Do(func() {
		var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
		_, err = unix.Write(p.wakefd, one)
	})
	return err
}
