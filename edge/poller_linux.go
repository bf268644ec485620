//go:build linux

package edge

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// epollPoller is the Linux poller: one epoll instance, one goroutine waiting
// on it, one-shot registrations.
type epollPoller struct {
	epfd   int
	wakefd int // an eventfd that wakes run for close

	mu    sync.RWMutex
	conns map[int32]*Conn // by fd

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
	return &epollPoller{epfd: epfd, wakefd: wakefd, conns: make(map[int32]*Conn)}, nil
}

func epollMask(out bool) uint32 {
	m := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT)
	if out {
		m |= unix.EPOLLOUT
	}
	return m
}

func (p *epollPoller) add(c *Conn, out bool) error {
	p.mu.Lock()
	p.conns[int32(c.fd)] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: epollMask(out), Fd: int32(c.fd), Pad: int32(c.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.forget(c)
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func (p *epollPoller) rearm(c *Conn, out bool) error {
	ev := unix.EpollEvent{Events: epollMask(out), Fd: int32(c.fd), Pad: int32(c.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl mod: %w", err)
	}
	return nil
}

func (p *epollPoller) remove(c *Conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil) // fails harmlessly if never added
	p.forget(c)
}

func (p *epollPoller) forget(c *Conn) {
	p.mu.Lock()
	if p.conns[int32(c.fd)] == c {
		delete(p.conns, int32(c.fd))
	}
	p.mu.Unlock()
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
			p.mu.RLock()
			c := p.conns[e.Fd]
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
