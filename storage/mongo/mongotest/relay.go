package mongotest

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// relay accepts connections on a listener it owns and pipes each to an
// upstream address. close cuts every connection at once, which is what a
// client of a killed server sees.
type relay struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup // the accept loop and every pipe goroutine
}

func newRelay(ln net.Listener, upstream string) *relay {
	r := &relay{ln: ln, upstream: upstream, conns: make(map[net.Conn]struct{})}
	r.wg.Add(1)
	go r.acceptLoop()
	return r
}

func (r *relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (EMFILE ...): back off a little; close
			// ends the loop.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		up, err := net.Dial("tcp", r.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !r.track(c, up) {
			_ = c.Close()
			_ = up.Close()
			return
		}
		r.wg.Add(2)
		go r.pipe(up, c)
		go r.pipe(c, up)
	}
}

// track registers both ends of a relayed connection; false if the relay is
// closing.
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst; when either side ends, both are closed so the
// other pipe of the pair ends too.
func (r *relay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	_, _ = io.Copy(dst, src)
	r.mu.Lock()
	delete(r.conns, dst)
	delete(r.conns, src)
	r.mu.Unlock()
	_ = dst.Close()
	_ = src.Close()
}

// close stops accepting, resets every relayed connection and waits for all
// of the relay's goroutines.
func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	_ = r.ln.Close()
	for c := range r.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, as the kernel does for a killed process
		}
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
