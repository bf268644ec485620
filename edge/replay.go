package edge

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/storage"
)

// A connection replays from the store when it connects with since, and
// again, in place, when the node asks it to resync (Server.Resync) and it
// answers with its resume position. Either way its replayJob moves
// through the phases below, and while it exists live frames for the
// connection are held (holdState) and sent after the replay, minus those
// the replay sent.
//
// A replay reads one page at a time, of at most ReplayPage messages and
// pageBytes of data, on a bounded pool of workers. A page is read only
// when the connection's write queue has drained to pageBytes: a slow
// client makes its own replay wait (up to PingInterval, then it is closed
// as a slow consumer) and never holds a worker, and a connection holds at
// most about two write queues' worth, whatever its backlog.
type jobPhase uint8

const (
	jobEarly    jobPhase = iota // a resync asked before the connection was live (no ready yet)
	jobAsked                    // a resync frame was sent; waiting for the client's resume
	jobQueued                   // waiting for a worker
	jobRunning                  // a worker is reading a page
	jobDraining                 // waiting for the client to take what was queued
	jobRetrying                 // the store failed; the page is read again after a pause
)

// replayJob is a connection's replay in progress; it exists only while one
// does, so an idle connection pays one nil pointer for it.
type replayJob struct {
	phase    jobPhase
	since    string              // the client's resume position (exclusive)
	after    string              // the next page starts after this ID
	seen     map[string]struct{} // IDs above since the client already has
	cursor   string              // what the ready frame will carry
	n        int                 // messages replayed
	cutoff   time.Time
	deadline uint32        // server clock: the client must answer (asked) or drain (draining) by then
	failing  time.Time     // when the store first failed this replay (retried until ReplayRetryFor)
	backoff  time.Duration // the last wait before a retry

	waiters []*Resync // resyncs this job completes
	again   []*Resync // resyncs asked while this job ran: they need one more
}

// Resync tracks a Server.Resync: how many of the connections it asked are
// still to finish their replay, or close.
type Resync struct {
	pending atomic.Int64
	done    chan struct{}
}

func newResync() *Resync {
	r := &Resync{done: make(chan struct{})}
	r.pending.Store(1) // held by Server.Resync until every connection is asked
	return r
}

// Done is closed once every connection the resync asked has replayed what
// it missed, or closed.
func (r *Resync) Done() <-chan struct{} { return r.done }

// Pending returns how many connections have not finished yet.
func (r *Resync) Pending() int { return int(r.pending.Load()) }

func (r *Resync) finishOne() {
	if r.pending.Add(-1) == 0 {
		close(r.done)
	}
}

// Resync asks connections to resume in place: the node may have missed
// deliveries for them (a dispatch node dropped what it had for this one,
// the binding store lost their bindings, ...). Each gets a {"type":"resync"}
// frame and answers with {"type":"resume","since":...,"seen":[...]}, its
// resume position; the edge then replays from the store what the client
// lacks, as on a reconnect, without the reconnect. A connection that does
// not answer within ResyncTimeout is closed with CloseResync, so that it
// reconnects and resumes. users names whose connections to ask; nil asks
// every connection. Connections that open later are not asked: they
// replay from their own position anyway.
//
// The returned Resync is done once every connection asked has replayed,
// or closed. The caller holds its cursor back until then.
func (s *Server) Resync(users []string) *Resync {
	r := newResync()
	var conns []*Conn
	if users == nil {
		conns = s.registry.conns()
	} else {
		for _, u := range users {
			conns = append(conns, s.registry.userConns(u)...)
		}
	}
	for _, c := range conns {
		if c.askResync(r) {
			r.pending.Add(1)
		}
	}
	s.metrics.resyncs.Add(float64(len(conns)))
	r.finishOne()
	return r
}

// askResync asks c to resync for r; it reports whether r must wait for c.
func (c *Conn) askResync(r *Resync) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	switch j := c.job; {
	case !c.live && j == nil:
		// Still in its handshake: it asks once it is live (Server.open).
		c.job = &replayJob{phase: jobEarly, waiters: []*Resync{r}}
	case j == nil:
		c.job = &replayJob{phase: jobAsked, waiters: []*Resync{r}}
		c.askLocked()
	case j.phase == jobAsked || j.phase == jobEarly:
		j.waiters = append(j.waiters, r) // one answer serves both
	default:
		// A replay is under way: what it reads may predate the reason for
		// this resync. Ask again once it is done.
		j.again = append(j.again, r)
	}
	return true
}

// askLocked sends the resync frame for c.job and starts its deadline.
func (c *Conn) askLocked() {
	c.job.deadline = c.srv.now() + uint32(c.srv.cfg.ResyncTimeout/time.Millisecond)
	c.srv.asked.add(c, c.job.deadline)
	c.queueLocked(resyncFrame.b)
}

// onResume handles the client's answer to a resync: it starts the replay
// from the position the client gives. A resume nobody asked for is
// ignored, so a client cannot make the server read the store at will.
func (c *Conn) onResume(m clientMessage) *closeError {
	if len(m.Seen) > c.srv.cfg.MaxSeen {
		return &closeError{CloseBadMessage, "resume lists more seen ids than allowed"}
	}
	c.mu.Lock()
	j := c.job
	if c.state != stateOpen || j == nil || j.phase != jobAsked {
		c.mu.Unlock()
		return nil
	}
	c.srv.asked.remove(c)
	j.phase = jobQueued
	j.since, j.after, j.seen = m.Since, m.Since, seenSet(m.Seen)
	j.cutoff = time.Now().Add(-c.srv.cfg.ReplayDedupe)
	j.cursor = max(c.srv.cursor(), m.Since)
	c.hold = &holdState{replayed: newIDSet(maxRecent)}
	c.mu.Unlock()
	c.srv.replays.push(c)
	return nil
}

func seenSet(ids []string) map[string]struct{} {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}

// cursor is the listener's current cursor, or "" without one.
func (s *Server) cursor() string {
	if l := s.cfg.Listener; l != nil {
		return l.Cursor()
	}
	return ""
}

// pageBytes bounds the message data of one replay page, and is the level
// a replaying connection's write queue must drain to before the next page.
func (s *Server) pageBytes() int { return max(s.cfg.WriteQueueBytes/4, 1) }

// replayPool is the FIFO of connections whose replay waits for a worker,
// and the workers. A connection is in it at most once (its job is queued).
//
// How many pages are read at once adapts to the store, as a TCP sender's
// window does: up to ReplayWorkers, halved each time the store fails a
// page (down, or too slow to answer in time), and back up by one for
// each page it serves. A struggling store then gets fewer, cheaper
// queries, and each finishes, instead of every replay timing out and
// starting over.
type replayPool struct {
	mu     sync.Mutex
	q      []*Conn
	head   int
	wake   chan struct{}
	closed bool
	wg     sync.WaitGroup
	queued atomic.Int64

	gate   *sync.Cond // on mu: waits while active >= limit
	max    int
	limit  int
	active int
	gauge  prometheus.Gauge
}

func (p *replayPool) start(s *Server) {
	p.wake = make(chan struct{}, s.cfg.ReplayWorkers)
	p.gate = sync.NewCond(&p.mu)
	p.max, p.limit, p.gauge = s.cfg.ReplayWorkers, s.cfg.ReplayWorkers, s.metrics.replayLimit
	p.gauge.Set(float64(p.limit))
	p.wg.Add(s.cfg.ReplayWorkers)
	for range s.cfg.ReplayWorkers {
		go func() {
			defer p.wg.Done()
			for {
				c, ok := p.pop()
				if !ok || !p.enter() {
					return
				}
				s.metrics.replayQueued.Set(float64(p.queued.Load()))
				s.replayPage(c)
				p.leave()
			}
		}()
	}
}

// enter waits until one more page may be read; false once the pool is
// closed.
func (p *replayPool) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.active >= p.limit && !p.closed {
		p.gate.Wait()
	}
	if p.closed {
		return false
	}
	p.active++
	return true
}

func (p *replayPool) leave() {
	p.mu.Lock()
	p.active--
	p.mu.Unlock()
	p.gate.Signal()
}

// served records a page the store served: one more may run at once.
func (p *replayPool) served() {
	p.mu.Lock()
	grew := p.limit < p.max
	if grew {
		p.limit++
		p.gauge.Set(float64(p.limit))
	}
	p.mu.Unlock()
	if grew {
		p.gate.Signal()
	}
}

// failed records a page the store failed: half as many run at once.
func (p *replayPool) failed() {
	p.mu.Lock()
	p.limit = max(p.limit/2, 1)
	p.gauge.Set(float64(p.limit))
	p.mu.Unlock()
}

func (p *replayPool) push(c *Conn) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.q = append(p.q, c)
	p.queued.Add(1)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// pop waits for a queued connection; ok is false once the pool is closed.
func (p *replayPool) pop() (*Conn, bool) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false
		}
		if p.head < len(p.q) {
			c := p.q[p.head]
			p.q[p.head] = nil
			p.head++
			if p.head == len(p.q) {
				p.q, p.head = p.q[:0], 0
			}
			p.queued.Add(-1)
			more := p.head < len(p.q)
			p.mu.Unlock()
			if more { // pass the wake-up on
				select {
				case p.wake <- struct{}{}:
				default:
				}
			}
			return c, true
		}
		p.mu.Unlock()
		<-p.wake
	}
}

// stop ends the workers (replays in progress finish their page) and waits.
func (p *replayPool) stop() {
	p.mu.Lock()
	p.closed = true
	p.q, p.head = nil, 0
	p.mu.Unlock()
	if p.wake != nil {
		close(p.wake)
		p.gate.Broadcast()
	}
	p.wg.Wait()
}

var errReplayStopped = errors.New("edge stopping")

// replayPage reads and queues one page of c's replay, then finishes the
// replay, queues c for its next page, or waits for c to drain.
func (s *Server) replayPage(c *Conn) {
	c.mu.Lock()
	j := c.job
	if c.state != stateOpen || j == nil || j.phase != jobQueued {
		c.mu.Unlock()
		return
	}
	j.phase = jobRunning
	after := j.after
	c.mu.Unlock()
	s.metrics.replayRunning.Inc()
	defer s.metrics.replayRunning.Dec()

	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	msgs, more, err := s.cfg.Replayer.Replay(ctx, storage.ReplayQuery{
		User: c.user, After: after, Limit: s.cfg.ReplayPage, MaxBytes: s.pageBytes(),
	})
	cancel()
	if err == nil && s.ctx.Err() != nil {
		err = errReplayStopped
	}
	if err != nil {
		if s.ctx.Err() == nil && s.retryLater(c, j, err) {
			return
		}
		if s.ctx.Err() == nil {
			s.log.Warn("replay failed", "user", c.user, "after", after, "err", err)
			s.metrics.closes.WithLabelValues(CloseReplayFailed.String()).Inc()
		}
		c.fail(&closeError{CloseReplayFailed, "replay failed; reconnect later"})
		return
	}
	s.replays.served()
	c.mu.Lock()
	j.failing = time.Time{}
	c.mu.Unlock()
	frames := make([]*Frame, 0, len(msgs))
	recent := make([]bool, 0, len(msgs)) // created after the cutoff: remembered (holdState.replayed)
	for _, m := range msgs {
		if m.ID == j.since {
			continue
		}
		if _, dup := j.seen[m.ID]; dup {
			continue
		}
		frames = append(frames, EncodeMessage(m.ID, m.Data, m.CreatedAt, ""))
		recent = append(recent, m.CreatedAt.After(j.cutoff))
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen || c.job != j {
		return // closed, or drained, meanwhile
	}
	for i, f := range frames {
		if recent[i] {
			c.hold.replayed.add(f.ID)
		}
		c.queueReplayLocked(f)
	}
	if c.state != stateOpen {
		return
	}
	j.n += len(frames)
	s.metrics.replayed.Add(float64(len(frames)))
	if len(msgs) > 0 {
		j.after = msgs[len(msgs)-1].ID
	}
	switch {
	case !more:
		c.finishJobLocked()
	case c.wbytes <= s.pageBytes():
		j.phase = jobQueued
		s.replays.push(c) // takes only the pool's lock
	default:
		j.phase = jobDraining
		j.deadline = s.now() + uint32(s.cfg.PingInterval/time.Millisecond)
		s.draining.add(c, j.deadline)
	}
}

// retryLater reads the page again after a pause when the store failed
// with a transient error (it is down, or too busy to answer in time),
// for up to ReplayRetryFor: closing the connection (and so making the
// client reconnect and replay from scratch) would only add load to a
// store that is struggling. It reports whether it will.
func (s *Server) retryLater(c *Conn, j *replayJob, err error) bool {
	if !errors.Is(err, storage.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	s.replays.failed()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen || c.job != j {
		return true // gone anyway
	}
	now := time.Now()
	if j.failing.IsZero() {
		j.failing = now
	}
	if now.Sub(j.failing) > s.cfg.ReplayRetryFor {
		return false
	}
	j.backoff = min(max(2*j.backoff, 100*time.Millisecond), 5*time.Second)
	j.phase = jobRetrying
	s.metrics.replayRetries.Inc()
	wait := j.backoff/2 + time.Duration(rand.Int64N(int64(j.backoff/2)+1))
	time.AfterFunc(wait, func() {
		c.mu.Lock()
		again := c.state == stateOpen && c.job == j && j.phase == jobRetrying
		if again {
			j.phase = jobQueued
		}
		c.mu.Unlock()
		if again {
			s.replays.push(c)
		}
	})
	return true
}

// finishJobLocked ends c's replay: the ready frame, then the held live
// frames; the resyncs it served are told, and a resync asked meanwhile
// starts.
func (c *Conn) finishJobLocked() {
	j := c.job
	c.job = nil
	ready := encodeJSONFrame(readyFrame{Type: "ready", User: c.user, Node: c.srv.cfg.NodeID, Replayed: j.n, Cursor: j.cursor})
	c.endHoldLocked(ready, uint32(c.srv.cfg.ReplayDedupe/time.Millisecond))
	for _, r := range j.waiters {
		r.finishOne()
	}
	if len(j.again) > 0 && c.state == stateOpen {
		c.job = &replayJob{phase: jobAsked, waiters: j.again}
		c.askLocked()
	}
}

// dropJobLocked forgets c's replay because c is closing: the resyncs
// waiting on it are done with it.
func (c *Conn) dropJobLocked() {
	j := c.job
	if j == nil {
		return
	}
	c.job = nil
	for _, r := range j.waiters {
		r.finishOne()
	}
	for _, r := range j.again {
		r.finishOne()
	}
}

// queueReplayLocked queues a replayed frame. A page is started only when
// the queue is at most pageBytes and holds at most pageBytes (plus one
// message), so it fits the queue without the write queue's bound.
func (c *Conn) queueReplayLocked(f *Frame) {
	if c.state == stateOpen {
		c.pushLocked(f.b)
	}
}

// replayDrainedLocked is called when c's write queue shrank: a replay
// waiting for room goes back in line.
func (c *Conn) replayDrainedLocked() {
	if j := c.job; j != nil && j.phase == jobDraining && c.wbytes <= c.srv.pageBytes() {
		j.phase = jobQueued
		c.srv.draining.remove(c)
		c.srv.replays.push(c)
	}
}

// checkJobs closes connections that did not answer a resync, or did not
// take their replay, in time. It runs on the ticker.
func (s *Server) checkJobs(now uint32) {
	for _, c := range s.asked.expired(now) {
		s.asked.remove(c)
		c.mu.Lock()
		j := c.job
		late := c.state == stateOpen && j != nil && j.phase == jobAsked && int32(now-j.deadline) >= 0
		c.mu.Unlock()
		if late {
			s.metrics.closes.WithLabelValues(CloseResync.String()).Inc()
			c.Close(CloseResync, "resync not answered; reconnect and resume")
		}
	}
	for _, c := range s.draining.expired(now) {
		s.draining.remove(c)
		c.mu.Lock()
		if j := c.job; c.state == stateOpen && j != nil && j.phase == jobDraining && int32(now-j.deadline) >= 0 {
			c.slowLocked()
		}
		c.mu.Unlock()
	}
}
