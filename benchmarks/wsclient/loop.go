package wsclient

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// loop is one epoll instance and the goroutine reading its sockets.
// Registrations are level-triggered; only this goroutine reads.
type loop struct {
	p      *Pool
	epfd   int
	wakefd int

	mu      sync.RWMutex
	clients map[int32]*Client

	done chan struct{}
	once sync.Once
}

func newLoop(p *Pool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	return &loop{p: p, epfd: epfd, wakefd: wakefd, clients: make(map[int32]*Client), done: make(chan struct{})}, nil
}

func (l *loop) add(c *Client) error {
	c.mu.Lock()
	fd, open := c.fd, c.open
	c.mu.Unlock()
	if !open {
		return errors.New("closed")
	}
	l.mu.Lock()
	l.clients[int32(fd)] = c
	l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.mu.Lock()
		delete(l.clients, int32(fd))
		l.mu.Unlock()
		return err
	}
	return nil
}

// remove forgets fd (called with the client's mutex held, before close).
func (l *loop) remove(fd int) {
	l.mu.Lock()
	if _, ok := l.clients[int32(fd)]; ok {
		delete(l.clients, int32(fd))
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	l.mu.Unlock()
}

func (l *loop) run() {
	defer close(l.done)
	defer unix.Close(l.epfd)
	defer unix.Close(l.wakefd)
	events := make([]unix.EpollEvent, 512)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := range n {
			fd := events[i].Fd
			if int(fd) == l.wakefd {
				return
			}
			l.mu.RLock()
			c := l.clients[fd]
			l.mu.RUnlock()
			if c != nil {
				c.onReadable(buf)
			}
		}
	}
}

func (l *loop) stop() {
	l.once.Do(func() {
		_, _ = unix.Write(l.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-l.done
	})
}
