package gobwasepoll

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldpush/herald/benchmarks/baselines"
)

const (
	// ioTimeout bounds every read and write, as the example's -io_timeout
	// does. The example's 100 ms dropped healthy connections here: a worker
	// preempted for 100 ms between setting the deadline and writing fails
	// before it writes (seen at 5,000 connections on 2 cores with the client
	// on the same machine). 10 s is gorilla's writeWait and the gws baseline's.
	ioTimeout = 10 * time.Second

	// The ws-examples chat server's -workers and -queue defaults.
	workers = 128
	queue   = 1
)

var (
	errTooBig          = errors.New("gobwasepoll: frame too big")
	errPollerClosed    = errors.New("gobwasepoll: poller closed")
	goingAwayFrame     = mustFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "")))
	tooBigFrame        = mustFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusMessageTooBig, "")))
	protocolErrorFrame = mustFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusProtocolError, "")))
)

// Server is the gobwas baseline: the common net/http server plus the hub's
// epoll loop and worker pool, which Start starts.
type Server struct {
	*baselines.HTTPServer
	hub *hub
}

var _ baselines.Server = (*Server)(nil)

// New returns the gobwas baseline server; it starts nothing.
func New(cfg baselines.Config) (baselines.Server, error) {
	h := &hub{
		log:      cfg.Log(),
		upgrader: ws.HTTPUpgrader{Timeout: ioTimeout},
		conns:    baselines.NewRegistry[*conn](),
		pool:     newPool(workers, queue),
	}
	hs, err := baselines.NewHTTPServer(cfg, h)
	if err != nil {
		return nil, err
	}
	return &Server{HTTPServer: hs, hub: h}, nil
}

// Start starts the epoll loop, then the HTTP server.
func (s *Server) Start() error {
	if err := s.hub.start(); err != nil {
		return err
	}
	return s.HTTPServer.Start()
}

// hub implements baselines.Hub.
type hub struct {
	log      *slog.Logger
	upgrader ws.HTTPUpgrader
	conns    *baselines.Registry[*conn]
	pool     *pool
	gen      atomic.Uint32

	pollerMu sync.Mutex
	poller   *poller // nil until start

	bmu  sync.Mutex // one broadcast at a time, like the example's writer goroutine
	snap []*conn    // reused by Broadcast under bmu
}

// conn is one WebSocket connection. It has no goroutine: the epoll loop
// schedules readFrame when it is readable, Broadcast schedules writes.
type conn struct {
	nc  net.Conn
	fd  int
	gen uint32 // tells this registration from an earlier one of the same fd

	rstate ws.State                   // fragmentation state; only the reading worker uses it
	hdr    [ws.MaxHeaderSize - 2]byte // header buffer; only the reading worker uses it

	wmu sync.Mutex // serialises writes: broadcasts, pongs, close frames

	mu     sync.Mutex // guards closed; held while (de)registering and closing nc
	closed bool
}

func (h *hub) start() error {
	p, err := newPoller(h.log)
	if err != nil {
		return err
	}
	h.pollerMu.Lock()
	h.poller = p
	h.pollerMu.Unlock()
	go p.run(h.dispatch)
	return nil
}

func (h *hub) getPoller() *poller {
	h.pollerMu.Lock()
	defer h.pollerMu.Unlock()
	return h.poller
}

func (h *hub) ServeWS(w http.ResponseWriter, r *http.Request, user string) {
	nc, rw, _, err := h.upgrader.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			_ = nc.Close() // Upgrade has written the error response.
		}
		return
	}
	// RFC 6455 4.1: the client waits for the 101 before sending frames. Bytes
	// already buffered by net/http would be invisible to epoll.
	if rw.Reader.Buffered() > 0 {
		_ = nc.Close()
		return
	}
	c := &conn{nc: nc, gen: h.gen.Add(1), rstate: ws.StateServerSide}
	if err := c.write(textFrame(baselines.ReadyFrame(user))); err != nil {
		_ = nc.Close()
		return
	}
	if c.fd, err = fdOf(nc); err != nil {
		_ = nc.Close()
		return
	}
	if !h.conns.Add(c) {
		_ = c.write(goingAwayFrame)
		_ = nc.Close() // shutting down
		return
	}
	c.mu.Lock()
	if !c.closed {
		err = errPollerClosed
		if p := h.getPoller(); p != nil {
			err = p.add(c)
		}
	}
	c.mu.Unlock()
	if err != nil {
		h.drop(c)
	}
}

// dispatch is called by the epoll loop for a readable (or hung-up)
// connection. With EPOLLONESHOT the connection stays disarmed until
// handleRead re-arms it, so one worker at a time reads it.
func (h *hub) dispatch(c *conn) {
	if !h.pool.schedule(func() { h.handleRead(c) }) {
		h.drop(c)
	}
}

func (h *hub) handleRead(c *conn) {
	if err := c.readFrame(); err != nil {
		h.drop(c)
		return
	}
	c.mu.Lock()
	err := errPollerClosed
	if !c.closed {
		if p := h.getPoller(); p != nil {
			err = p.rearm(c)
		}
	}
	c.mu.Unlock()
	if err != nil {
		h.drop(c)
	}
}

// drop closes c and forgets it. It is idempotent.
func (h *hub) drop(c *conn) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if p := h.getPoller(); p != nil {
		p.remove(c) // before Close, so the fd cannot be reused while registered
	}
	_ = c.nc.Close()
	c.mu.Unlock()
	h.conns.Remove(c)
}

func (h *hub) Broadcast(payload []byte) int {
	frame := textFrame(payload)
	h.bmu.Lock()
	defer h.bmu.Unlock()
	// A snapshot, because a failed write drops (and so unregisters) a
	// connection from a worker while this loop may be blocked scheduling.
	h.snap = h.conns.Snapshot(h.snap[:0])
	var wg sync.WaitGroup
	for _, c := range h.snap {
		wg.Add(1)
		ok := h.pool.schedule(func() {
			defer wg.Done()
			if err := c.write(frame); err != nil {
				h.drop(c)
			}
		})
		if !ok {
			wg.Done()
		}
	}
	wg.Wait()
	n := len(h.snap)
	clear(h.snap)
	return n
}

func (h *hub) Conns() int { return h.conns.Len() }

// Close writes a going-away frame to every connection and closes it, then
// stops the epoll loop and the worker pool.
func (h *hub) Close(ctx context.Context) error {
	for _, c := range h.conns.Close() {
		_ = c.writeWithin(goingAwayFrame, baselines.CloseTimeout)
		h.drop(c)
	}
	if p := h.getPoller(); p != nil {
		p.close()
	}
	return h.pool.close(ctx)
}

// readFrame reads one frame: control frames are answered, data frames
// discarded. Only the worker that the epoll loop scheduled calls it.
func (c *conn) readFrame() error {
	src := deadliner{c.nc}
	hdr, err := ws.ReadHeaderBuffer(src, c.hdr[:])
	if err != nil {
		return err
	}
	if err := ws.CheckHeader(hdr, c.rstate); err != nil {
		_ = c.write(protocolErrorFrame)
		return err
	}
	if hdr.Length > baselines.MaxMessageBytes {
		_ = c.write(tooBigFrame)
		return errTooBig
	}
	body := io.LimitReader(src, hdr.Length)
	if hdr.OpCode.IsControl() {
		// The handler unmasks and writes its answer (pong, close echo) to
		// out, which goes out in one write under wmu. After a close frame
		// it returns wsutil.ClosedError.
		var out bytes.Buffer
		err := wsutil.ControlHandler{Src: body, Dst: &out, State: ws.StateServerSide}.Handle(hdr)
		if out.Len() > 0 {
			if werr := c.write(out.Bytes()); err == nil {
				err = werr
			}
		}
		return err
	}
	if hdr.Fin {
		c.rstate = c.rstate.Clear(ws.StateFragmented)
	} else {
		c.rstate = c.rstate.Set(ws.StateFragmented)
	}
	_, err = io.Copy(io.Discard, body)
	return err
}

// write writes one whole encoded frame within ioTimeout.
func (c *conn) write(frame []byte) error {
	return c.writeWithin(frame, ioTimeout)
}

func (c *conn) writeWithin(frame []byte, timeout time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := c.nc.Write(frame)
	return err
}

// deadliner is the example's wrapper: every Read gets the I/O timeout.
type deadliner struct{ net.Conn }

func (d deadliner) Read(p []byte) (int, error) {
	if err := d.Conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		return 0, err
	}
	return d.Conn.Read(p)
}

// textFrame encodes payload as one unmasked, final text frame.
func textFrame(payload []byte) []byte {
	return mustFrame(ws.NewTextFrame(payload))
}

func mustFrame(f ws.Frame) []byte {
	var buf bytes.Buffer
	buf.Grow(ws.HeaderSize(f.Header) + len(f.Payload))
	// Writing to a bytes.Buffer cannot fail.
	_ = ws.WriteFrame(&buf, f)
	return buf.Bytes()
}
