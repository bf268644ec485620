package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// State is the lifecycle state of a Server.
type State int32

// Server states, in order.
const (
	StateNew      State = iota // built, not started
	StateRunning               // accepting connections
	StateDraining              // sending clients elsewhere; no new connections
	StateStopped               // shut down
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateRunning:
		return "running"
	case StateDraining:
		return "draining"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// ErrNotRunning is returned by Start on a Server that is not new, and by
// Drain on one that is not running.
var ErrNotRunning = errors.New("edge: server not running")

// Server is the WebSocket edge. Build it with New, start it with Start,
// mount it (it is an http.Handler for the /ws endpoint), and stop it with
// Drain and Shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	start   time.Time

	life  sync.RWMutex // guards state changes against new handshakes
	state atomic.Int32
	hs    sync.WaitGroup // handshakes in progress
	hsSem chan struct{}

	ctx    context.Context // cancelled by Shutdown: stops replays
	cancel context.CancelFunc

	poller   poller
	tasks    chan task
	registry *registry
	wheel    *wheel
	closing  deadlineSet // waiting for the client's close frame
	asked    deadlineSet // asked to resync, waiting for the client's resume
	draining deadlineSet // replaying, waiting for the client to take a page
	replays  replayPool
	gen      atomic.Uint32

	drainMu     sync.Mutex
	drainHint   func(user string) string // set by Drain, for connections that register during it
	drainSpread time.Duration
	conns       atomic.Int64

	zeroMu sync.Mutex
	zero   chan struct{} // closed when the connection count drops to 0

	reapMu sync.Mutex
	reaped []*Conn
	reapCh chan struct{}

	stop    chan struct{}  // closed by Shutdown: stops the ticker and reaper
	pollWG  sync.WaitGroup // the poller's goroutine
	workWG  sync.WaitGroup // the workers
	timerWG sync.WaitGroup // the ticker and the reaper
}

type task struct {
	c  *Conn
	ev event
}

// New validates cfg and builds a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		metrics:  m,
		start:    time.Now(),
		hsSem:    make(chan struct{}, cfg.MaxHandshakes),
		registry: newRegistry(cfg.Listener),
		wheel:    newWheel(int(cfg.PingInterval / cfg.Tick)),
		reapCh:   make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// State returns the server's lifecycle state.
func (s *Server) State() State { return State(s.state.Load()) }

// Start starts the poller, the workers, the timing wheel and the reaper.
func (s *Server) Start() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.State() != StateNew {
		return ErrNotRunning
	}
	p, err := newPoller(s.cfg.portable)
	if err != nil {
		return err
	}
	s.poller = p
	s.tasks = make(chan task, s.cfg.Workers*4)
	s.workWG.Add(s.cfg.Workers)
	for range s.cfg.Workers {
		go s.work()
	}
	s.pollWG.Add(1)
	go func() { defer s.pollWG.Done(); p.run(s.dispatch) }()
	s.replays.start(s)
	s.timerWG.Add(2)
	go s.tick()
	go s.reapLoop()
	s.state.Store(int32(StateRunning))
	s.log.Info("edge started", "workers", s.cfg.Workers, "ping", s.cfg.PingInterval, "max_message_bytes", s.cfg.MaxMessageBytes)
	return nil
}

// now is the server clock: milliseconds since New, wrapping after 49 days.
// Compare two readings only by their signed difference, which is right
// for spans under 24 days.
func (s *Server) now() uint32 { return uint32(time.Since(s.start) / time.Millisecond) }

// idleFor is how long a connection last read at last has been silent at
// now, in server-clock milliseconds. A read that raced ahead of the
// caller's reading of the clock counts as no silence at all: an unsigned
// now-last would wrap around and close a busy connection as idle.
func idleFor(now, last uint32) uint32 {
	if d := int32(now - last); d > 0 {
		return uint32(d)
	}
	return 0
}

// dispatch hands a polled connection to a worker. Blocking here when every
// worker is busy holds back the poller: backpressure instead of a queue.
func (s *Server) dispatch(c *Conn, ev event) {
	c.mu.Lock()
	c.armed = false
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	if c.busy {
		c.pendingEv |= uint32(ev)
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	s.tasks <- task{c, ev}
}

func (s *Server) work() {
	defer s.workWG.Done()
	buf := make([]byte, s.cfg.ReadBufferBytes)
	for t := range s.tasks {
		s.handle(t.c, t.ev, buf)
	}
}

// handle serves one connection's events, then re-arms it.
func (s *Server) handle(c *Conn, ev event, buf []byte) {
	for {
		more := false
		if ev&evRead != 0 {
			more = c.onReadable(buf)
		}
		if ev&evWrite != 0 {
			c.mu.Lock()
			if c.wantOut && c.state != stateClosed {
				c.wantOut = false
				c.flushLocked()
			}
			c.mu.Unlock()
		}
		c.mu.Lock()
		if more {
			c.pendingEv |= uint32(evRead) // data left behind: no new edge will tell us
		}
		if c.pendingEv != 0 && c.state != stateClosed {
			ev = event(c.pendingEv)
			c.pendingEv = 0
			c.mu.Unlock()
			continue
		}
		c.pendingEv = 0
		c.busy = false
		s.armLocked(c)
		c.mu.Unlock()
		return
	}
}

// armLocked asks the poller for c's next event.
func (s *Server) armLocked(c *Conn) {
	if c.state == stateClosed {
		return
	}
	if err := s.poller.rearm(c, c.wantOut); err != nil {
		c.state = stateClosing
		s.reap(c)
		return
	}
	c.armed = true
}

// tick drives the timing wheel and the close timeouts.
func (s *Server) tick() {
	defer s.timerWG.Done()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	ping := appendFrame(nil, 0x9, nil)
	idle := uint32(s.cfg.IdleTimeout / time.Millisecond)
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now, unix := s.now(), uint32(time.Now().Unix())
		s.wheel.tick(func(c *Conn) {
			switch {
			case c.expires != 0 && unix >= c.expires:
				s.metrics.closes.WithLabelValues(CloseTokenExpired.String()).Inc()
				c.Close(CloseTokenExpired, "token expired")
			case idleFor(now, c.lastRead.Load()) >= idle:
				c.fail(&closeError{CloseIdle, "idle timeout"})
			default:
				c.send(ping)
			}
		})
		for _, c := range s.closing.expired(now) {
			c.teardown(nil)
		}
		s.checkJobs(now)
	}
}

// reap closes connections from a goroutine that holds no lock, for code
// paths that find a dead connection while holding one.
func (s *Server) reap(c *Conn) {
	s.reapMu.Lock()
	s.reaped = append(s.reaped, c)
	s.reapMu.Unlock()
	select {
	case s.reapCh <- struct{}{}:
	default:
	}
}

func (s *Server) reapLoop() {
	defer s.timerWG.Done()
	for {
		select {
		case <-s.reapCh:
		case <-s.stop:
			s.reapAll()
			return
		}
		s.reapAll()
	}
}

func (s *Server) reapAll() {
	s.reapMu.Lock()
	batch := s.reaped
	s.reaped = nil
	s.reapMu.Unlock()
	for _, c := range batch {
		c.teardown(nil)
	}
}

// register makes an upgraded connection live: polled, findable by user,
// pinged. Each step checks for a close that raced with it.
func (s *Server) register(c *Conn) error {
	c.mu.Lock()
	c.busy = false
	if c.state == stateClosed {
		c.mu.Unlock()
		return errConnClosed
	}
	if err := s.poller.add(c, c.wantOut); err != nil {
		c.mu.Unlock()
		c.teardown(err)
		return err
	}
	c.armed = true
	c.registered = true
	s.conns.Add(1) // under c.mu: a racing teardown counts it down after
	s.metrics.connections.Inc()
	c.mu.Unlock()
	s.registry.add(c)
	s.wheel.add(c)
	if c.isClosed() { // closed while registering: undo what teardown missed
		s.registry.remove(c)
		s.wheel.remove(c)
	}
	return nil
}

// forget removes a torn-down connection from every index; registered says
// whether register counted it.
func (s *Server) forget(c *Conn, registered bool) {
	s.registry.remove(c)
	s.wheel.remove(c)
	s.closing.remove(c)
	s.asked.remove(c)
	s.draining.remove(c)
	if !registered {
		return
	}
	s.metrics.connections.Dec()
	if s.conns.Add(-1) == 0 {
		s.zeroMu.Lock()
		if s.zero != nil {
			close(s.zero)
			s.zero = nil
		}
		s.zeroMu.Unlock()
	}
}

// waitEmpty waits until no connection is open or ctx ends.
func (s *Server) waitEmpty(ctx context.Context) error {
	s.zeroMu.Lock()
	if s.conns.Load() == 0 {
		s.zeroMu.Unlock()
		return nil
	}
	if s.zero == nil {
		s.zero = make(chan struct{})
	}
	ch := s.zero
	s.zeroMu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ---- delivery

// Deliver queues f on every connection of each user and returns how many
// connections took it. It never blocks on a slow client.
func (s *Server) Deliver(f *Frame, users ...string) int {
	n := 0
	for _, u := range users {
		n += s.registry.deliver(u, f)
	}
	s.metrics.delivered.Add(float64(n))
	return n
}

// Broadcast queues f on every connection and returns how many took it. The
// registry's shards are walked in parallel, one goroutine per core.
func (s *Server) Broadcast(f *Frame) int {
	start := time.Now()
	workers := min(runtime.GOMAXPROCS(0), registryShards)
	var next, total atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= registryShards {
					return
				}
				total.Add(int64(s.registry.deliverShard(i, f)))
			}
		}()
	}
	wg.Wait()
	n := int(total.Load())
	s.metrics.delivered.Add(float64(n))
	s.metrics.broadcast.Observe(time.Since(start).Seconds())
	return n
}

// Online reports whether user has a connection on this edge.
func (s *Server) Online(user string) bool { return s.registry.online(user) }

// Users returns the users with a connection on this edge.
func (s *Server) Users() []string { return s.registry.userList() }

// UserShards is the number of parts UsersInShard splits users into.
const UserShards = registryShards

// UsersInShard returns the users with a connection on this edge whose IDs
// fall in shard i (0 <= i < UserShards): for work spread over time.
func (s *Server) UsersInShard(i int) []string { return s.registry.shardUsers(i) }

// Connections returns the number of open connections.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// ---- stopping

// Drain sends every client elsewhere: each gets a "reconnect" frame with
// the URL hint(user) returns (empty for none) and a random delay below
// spread, then a CloseRestart. New connections are refused from the start.
// Drain returns when every connection has closed or ctx ends.
func (s *Server) Drain(ctx context.Context, hint func(user string) string, spread time.Duration) error {
	s.life.Lock()
	if s.State() != StateRunning {
		s.life.Unlock()
		return ErrNotRunning
	}
	s.state.Store(int32(StateDraining))
	s.life.Unlock()
	s.drainMu.Lock()
	s.drainHint, s.drainSpread = hint, spread
	s.drainMu.Unlock()
	conns := s.registry.conns()
	s.log.Info("edge draining", "connections", len(conns))
	for _, c := range conns {
		s.drainConn(c)
	}
	return s.waitEmpty(ctx)
}

// drainConn sends c elsewhere: a "reconnect" frame with its hint and a
// random delay within the drain spread, then CloseRestart. A replay in
// progress is abandoned; the client resumes where it got to.
func (s *Server) drainConn(c *Conn) {
	s.drainMu.Lock()
	hint, spread := s.drainHint, s.drainSpread
	s.drainMu.Unlock()
	var delay time.Duration
	if spread > 0 {
		delay = rand.N(spread)
	}
	var url string
	if hint != nil {
		url = hint(c.user)
	}
	f := encodeJSONFrame(reconnectFrame{Type: "reconnect", URL: url, DelayMS: delay.Milliseconds()})
	c.mu.Lock()
	if c.state == stateOpen {
		c.hold = nil
		c.dropJobLocked()
		c.queueLocked(f.b)
		if c.state == stateOpen {
			c.queueCloseLocked(closePayload(CloseRestart, "restart"), false)
		}
	}
	c.mu.Unlock()
	s.metrics.closes.WithLabelValues(CloseRestart.String()).Inc()
}

// Shutdown closes every connection (CloseGoingAway unless already closing),
// waits for them and for every goroutine the Server started, or until ctx
// ends, after which the remaining sockets are closed at once. It is
// idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.life.Lock()
	prev := s.State()
	s.state.Store(int32(StateStopped))
	s.life.Unlock()
	if prev == StateStopped {
		return nil
	}
	s.cancel()
	s.hs.Wait() // handshakes end quickly once s.ctx is cancelled
	if prev == StateNew {
		return nil
	}
	for _, c := range s.registry.conns() {
		c.Close(CloseGoingAway, "server stopping")
	}
	err := s.waitEmpty(ctx)
	s.stopLoops()
	s.log.Info("edge stopped")
	return err
}

// Abort drops every connection at once, without close frames, and stops,
// as a crashed process would: clients see the TCP connection end. It is
// for tests and chaos drills; use Drain and Shutdown otherwise.
func (s *Server) Abort() {
	s.life.Lock()
	prev := s.State()
	s.state.Store(int32(StateStopped))
	s.life.Unlock()
	if prev == StateStopped {
		return
	}
	s.cancel()
	s.hs.Wait()
	if prev != StateNew {
		s.stopLoops()
	}
	s.log.Info("edge aborted")
}

// stopLoops drops the connections still open, then stops the poller, the
// workers, the ticker and the reaper, and waits for them.
func (s *Server) stopLoops() {
	for _, c := range s.registry.conns() {
		c.teardown(io.ErrClosedPipe)
	}
	_ = s.poller.close()
	s.pollWG.Wait() // no more dispatches after this
	close(s.tasks)
	s.workWG.Wait()
	s.replays.stop()
	close(s.stop)
	s.timerWG.Wait()
}
