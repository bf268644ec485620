package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldpush/herald/node/rpc/rpcpb"
)

// Causes with which a stream's context is cancelled.
var (
	errAckDeadline  = errors.New("rpc: ack deadline passed")
	errDialDeadline = errors.New("rpc: dial deadline passed")
	errPeerClosed   = errors.New("rpc: peer closed")
	errTornDown     = errors.New("rpc: stream torn down")
	errNewSession   = errors.New("rpc: new session")
)

// sender is a peer's one sender goroutine: it takes the queue into batches
// and sends them on one Deliver stream at a time. Batches stay in the
// peer's unacked list until acked; when a stream breaks (or an ack is
// late) the sender opens another and sends them again, and the receiver
// drops what it already handled. Nothing is ever given up on here: only
// Enqueue's bound, Drop, Remove and Close drop deliveries, into a gap the
// next session reports.
type sender struct {
	p   *Peer
	cfg *ClientConfig
	m   *clientMetrics
	log *slog.Logger

	st  *stream // nil while not connected
	seq uint64  // last batch number sent on st

	timer    *time.Timer   // the batch delay while connected; pauses while not
	backoff  time.Duration // the last pause between attempts; 0 after success
	lastErr  error
	failing  bool      // the last attempt failed (logged once, not each time)
	acked    bool      // the current stream has had an ack
	firstErr time.Time // when the peer became unreachable
}

type ack struct {
	seq uint64
	err string
}

// stream is one Deliver stream and its receiver goroutine.
type stream struct {
	cs      grpc.BidiStreamingClient[rpcpb.DeliverBatch, rpcpb.DeliverAck]
	ctx     context.Context
	cancel  context.CancelCauseFunc
	session uint64 // the session it carries
	acks    chan ack
	done    chan struct{} // closed when the receiver has exited
	err     error         // why it exited; read after done

	// The watchdog cuts the stream when the oldest unacked batch is older
	// than timeout, even while the sender is blocked in Send.
	timeout  time.Duration
	base     time.Time
	deadline atomic.Int64 // ns since base; 0: nothing unacked
	watchdog *time.Timer
}

func (p *Peer) run() {
	defer p.c.wg.Done()
	s := &sender{p: p, cfg: &p.c.cfg, m: p.c.m, log: p.c.log.With("peer", p.addr)}
	s.timer = time.NewTimer(time.Duration(math.MaxInt64))
	s.timer.Stop()
	defer s.finish()
	for p.ctx.Err() == nil {
		if !p.hasWork() {
			select {
			case <-p.notify:
			case <-p.ctx.Done():
			}
			continue
		}
		if err := s.open(); err != nil {
			if p.ctx.Err() != nil {
				return
			}
			s.unreachable(err)
			s.pause(s.nextBackoff())
			continue
		}
		s.serve()
		if p.ctx.Err() == nil && !s.acked {
			// The stream broke before any ack: do not hammer the peer.
			s.pause(s.nextBackoff())
		}
	}
}

// hasWork reports whether there is anything to send.
func (p *Peer) hasWork() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.unacked) > 0 || len(p.q) > p.head
}

func (s *sender) nextBackoff() time.Duration {
	base := baseBackoff(s.cfg.MaxBackoff)
	s.backoff = min(max(2*s.backoff, base), s.cfg.MaxBackoff)
	// ±20% jitter, so that the dispatch nodes do not all retry together.
	return time.Duration(float64(s.backoff) * (0.8 + 0.4*rand.Float64()))
}

// unreachable records a failed attempt to open a stream.
func (s *sender) unreachable(err error) {
	s.lastErr = err
	if !s.failing {
		s.failing = true
		s.firstErr = time.Now()
		s.log.Warn("rpc peer unreachable; retrying", "err", err)
	} else {
		s.log.Debug("rpc peer still unreachable", "err", err, "since", s.firstErr)
	}
}

// pause waits d, or until the peer is closed.
func (s *sender) pause(d time.Duration) {
	s.timer.Reset(d)
	select {
	case <-s.timer.C:
	case <-s.p.ctx.Done():
		s.timer.Stop()
	}
}

// open opens a Deliver stream, waits, at most DialTimeout, for the server
// to accept it, and sends again what the previous stream left unacked.
func (s *sender) open() error {
	p := s.p
	if p.connErr != nil {
		return p.connErr
	}
	ctx, cancel := context.WithCancelCause(p.ctx)
	t := time.AfterFunc(s.cfg.DialTimeout, func() { cancel(errDialDeadline) })
	cs, err := p.rpc.Deliver(ctx, grpc.WaitForReady(true))
	if err == nil {
		var md map[string][]string
		if md, err = cs.Header(); err == nil && md == nil {
			// The stream ended before it was accepted; Recv says why.
			if _, err = cs.Recv(); err == nil {
				err = errors.New("rpc: ack before any batch")
			}
		}
	}
	t.Stop()
	if err != nil {
		if errors.Is(context.Cause(ctx), errDialDeadline) {
			err = fmt.Errorf("%w: no stream to %s within %v", ErrUnavailable, p.addr, s.cfg.DialTimeout)
		} else {
			err = s.streamError(err)
		}
		cancel(nil)
		return err
	}
	st := &stream{
		cs: cs, ctx: ctx, cancel: cancel,
		acks:    make(chan ack, s.cfg.Window+1),
		done:    make(chan struct{}),
		timeout: s.cfg.AckTimeout,
		base:    time.Now(),
	}
	st.watchdog = time.AfterFunc(time.Duration(math.MaxInt64), st.watch)
	go st.receive()
	s.st, s.seq, s.acked = st, 0, false
	s.m.streams.Inc()
	if s.failing {
		s.log.Info("rpc peer reachable again", "after", time.Since(s.firstErr).Round(time.Millisecond))
		s.failing = false
	}
	// The session header goes first; then what is unacked, again.
	p.mu.Lock()
	if !p.sess.announced && (p.sess.gapAll || len(p.sess.gapUsers) > 0 || p.sess.prev != 0) {
		s.m.gaps.Inc()
	}
	p.sess.announced = true
	st.session = p.sess.number
	hdr := &rpcpb.Session{
		SourceId: s.cfg.Source.ID, SourceIncarnation: s.cfg.Source.Incarnation,
		Number: p.sess.number, Prev: p.sess.prev, GapAll: p.sess.gapAll, Cursors: s.cfg.Cursors,
	}
	for u := range p.sess.gapUsers {
		hdr.GapUsers = append(hdr.GapUsers, u)
	}
	again := append([]*batch(nil), p.unacked...)
	p.mu.Unlock()
	sort.Strings(hdr.GapUsers)
	first := true
	if len(again) == 0 {
		if err := s.sendBatch(&batch{}, hdr); err != nil {
			s.teardown(err)
			return nil
		}
		first = false
	}
	for _, b := range again {
		h := hdr
		if !first {
			h = nil
		}
		first = false
		s.m.resent.Add(float64(len(b.ds)))
		if err := s.sendBatch(b, h); err != nil {
			s.teardown(err)
			return nil
		}
	}
	return nil
}

func (st *stream) receive() {
	defer close(st.done)
	for {
		a, err := st.cs.Recv()
		if err != nil {
			st.err = err
			return
		}
		select {
		case st.acks <- ack{seq: a.GetSeq(), err: a.GetError()}:
		case <-st.ctx.Done():
			st.err = context.Cause(st.ctx)
			return
		}
	}
}

// watch runs on the watchdog timer.
func (st *stream) watch() {
	d := st.deadline.Load()
	if d == 0 {
		return
	}
	if left := time.Duration(d) - time.Since(st.base); left > 0 {
		st.watchdog.Reset(left)
		return
	}
	st.cancel(errAckDeadline)
}

// setDeadline sets the ack deadline for a batch sent at sent, or clears it.
func (st *stream) setDeadline(sent time.Time, arm bool) {
	if sent.IsZero() {
		st.deadline.Store(0)
		return
	}
	d := sent.Sub(st.base) + st.timeout
	st.deadline.Store(int64(max(d, 1)))
	if arm {
		st.watchdog.Reset(time.Until(sent.Add(st.timeout)))
	}
}

// serve runs the stream until it breaks, its session is over, or the peer
// is closed.
func (s *sender) serve() {
	st := s.st
	if st == nil {
		return // open sent nothing: it tore the stream down already
	}
	p := s.p
	delayArmed, delayDone := false, false
	for {
		p.mu.Lock()
		if p.sess.number != st.session {
			p.mu.Unlock()
			s.teardown(errNewSession)
			return
		}
		room := len(p.unacked) < s.cfg.Window
		pending := p.qn > 0 || len(p.q) > p.head
		full := p.qn >= s.cfg.BatchMax || p.queuedBytesLocked() >= s.cfg.BatchMaxBytes || p.hasMarkLocked()
		p.mu.Unlock()
		if room && pending && (full || s.cfg.BatchDelay <= 0 || delayDone) {
			if delayArmed {
				s.timer.Stop()
			}
			delayArmed, delayDone = false, false
			b := s.take()
			if b != nil {
				if err := s.sendBatch(b, nil); err != nil {
					s.teardown(err)
					return
				}
			}
			continue
		}
		if room && pending && !delayArmed && !delayDone {
			s.timer.Reset(s.cfg.BatchDelay)
			delayArmed = true
		}
		var delay <-chan time.Time
		if delayArmed {
			delay = s.timer.C
		}
		select {
		case <-p.notify:
		case <-delay:
			delayArmed, delayDone = false, true
		case a := <-st.acks:
			if err := s.ack(a); err != nil {
				s.teardown(err)
				return
			}
		case <-st.done:
			s.teardown(nil)
			return
		case <-p.ctx.Done():
			if delayArmed {
				s.timer.Stop()
			}
			s.teardown(errPeerClosed)
			return
		}
	}
}

// queuedBytesLocked is the estimated size of the queued deliveries.
func (p *Peer) queuedBytesLocked() int {
	n := p.heldB
	for _, b := range p.unacked {
		n -= b.size
	}
	return n
}

// hasMarkLocked reports whether a cursor or the end is queued: it closes
// a batch at once.
func (p *Peer) hasMarkLocked() bool { return p.marks > 0 }

// take moves items from the queue into a new unacked batch: deliveries up
// to BatchMax and about BatchMaxBytes (the first always goes), ending at a
// cursor or the end, which the batch carries.
func (s *sender) take() *batch {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	b := &batch{first: p.next}
	k := p.head
	for ; k < len(p.q) && len(b.ds) < s.cfg.BatchMax; k++ {
		it := p.q[k]
		if it.d.Message == nil {
			if it.end {
				b.end = true
			} else {
				b.cursor = it.cursor
			}
			p.marks--
			k++
			break
		}
		if b.size+it.size > s.cfg.BatchMaxBytes && len(b.ds) > 0 {
			break
		}
		b.ds = append(b.ds, it.d)
		b.size += it.size
	}
	// A cursor right behind a full batch rides with it.
	if k < len(p.q) && !b.end && b.cursor == "" && p.q[k].d.Message == nil && !p.q[k].end {
		b.cursor = p.q[k].cursor
		p.marks--
		k++
	}
	if k == p.head {
		return nil
	}
	clear(p.q[p.head:k])
	p.head = k
	if p.head == len(p.q) {
		p.q, p.head = p.q[:0], 0
	} else if p.head >= 1024 && p.head*2 >= len(p.q) {
		n := copy(p.q, p.q[p.head:])
		clear(p.q[n:])
		p.q, p.head = p.q[:n], 0
	}
	p.qn -= len(b.ds)
	p.next += uint64(len(b.ds))
	p.unacked = append(p.unacked, b)
	s.m.queued.Sub(float64(len(b.ds)))
	s.m.inFlight.Add(float64(len(b.ds)))
	s.m.batch.Observe(float64(len(b.ds)))
	return b
}

// sendBatch sends b on the current stream, with the session header hdr
// if set (the stream's first batch).
func (s *sender) sendBatch(b *batch, hdr *rpcpb.Session) error {
	s.seq++
	b.seq, b.sent = s.seq, time.Now()
	s.p.mu.Lock()
	oldest := len(s.p.unacked) > 0 && s.p.unacked[0] == b
	s.p.mu.Unlock()
	if oldest || hdr != nil {
		s.st.setDeadline(b.sent, true)
	}
	s.m.sent.Add(float64(len(b.ds)))
	return s.st.cs.Send(&rpcpb.DeliverBatch{Seq: b.seq, Deliveries: deliveriesToProto(b.ds), Session: hdr,
		First: b.first, Cursor: b.cursor, End: b.end})
}

// ack completes the batches sent on this stream up to a.seq (acks are
// cumulative; the server sends one per batch, in order). A batch the
// receiver's handler refused is dropped like an acked one: the receiver
// is responsible for what it could not take.
func (s *sender) ack(a ack) error {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.seq > s.seq {
		return fmt.Errorf("rpc: %s acked batch %d, which was not sent", p.addr, a.seq)
	}
	k := 0
	n := 0
	for ; k < len(p.unacked) && p.unacked[k].seq <= a.seq && p.unacked[k].seq != 0; k++ {
		b := p.unacked[k]
		n += len(b.ds)
		p.heldB -= b.size
		if b.end && p.endDone != nil {
			close(p.endDone)
			p.endDone = nil
		}
	}
	if a.err != "" && k > 0 {
		s.log.Warn("rpc peer refused a batch", "err", a.err, "deliveries", len(p.unacked[k-1].ds))
	}
	m := copy(p.unacked, p.unacked[k:])
	clear(p.unacked[m:])
	p.unacked = p.unacked[:m]
	p.held -= n
	s.m.inFlight.Sub(float64(n))
	s.m.acked.Add(float64(n))
	p.completedLocked(n)
	if len(p.unacked) > 0 {
		s.st.setDeadline(p.unacked[0].sent, false)
	} else {
		s.st.setDeadline(time.Time{}, false)
	}
	s.acked = true
	s.backoff = 0
	return nil
}

// teardown ends the stream. What it left unacked stays, to be sent again
// on the next stream. err is what the sender saw (nil if the receiver saw
// it first).
func (s *sender) teardown(err error) {
	st := s.st
	defer func() { s.st = nil }()
	st.cancel(errTornDown)
	<-st.done
	st.watchdog.Stop()
	// Acks that arrived before the break still count.
	for drained := false; !drained; {
		select {
		case a := <-st.acks:
			if s.ack(a) != nil {
				drained = true
			}
		default:
			drained = true
		}
	}
	// Batches not acked on it are sent again, renumbered, on the next one.
	s.p.mu.Lock()
	unacked := 0
	for _, b := range s.p.unacked {
		b.seq = 0
		unacked += len(b.ds)
	}
	s.p.mu.Unlock()
	cause := context.Cause(st.ctx)
	var reason error
	switch {
	case s.p.ctx.Err() != nil:
		s.log.Debug("rpc deliver stream closed")
		return
	case errors.Is(err, errNewSession):
		s.log.Debug("rpc deliver stream cut for a new session")
		return
	case errors.Is(cause, errAckDeadline):
		s.m.ackLate.Inc()
		reason = fmt.Errorf("%w: %s did not ack within %v", ErrAckTimeout, s.p.addr, s.cfg.AckTimeout)
	case err == nil || errors.Is(err, io.EOF):
		reason = s.streamError(st.err)
	default:
		reason = s.streamError(err)
	}
	s.lastErr = reason
	s.log.Warn("rpc deliver stream ended; unacked deliveries will be sent again", "err", reason, "unacked", unacked)
}

// streamError classifies why a stream could not open or broke.
func (s *sender) streamError(err error) error {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return fmt.Errorf("%w: %s ended the stream", ErrUnavailable, s.p.addr)
	case status.Code(err) == codes.Unauthenticated:
		return fmt.Errorf("%w: %s: %w", ErrUnauthenticated, s.p.addr, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, s.p.addr, err)
}

// finish ends the stream, if any, once the peer is closed (close dropped
// what it held), and closes its connection.
func (s *sender) finish() {
	if s.st != nil {
		s.teardown(errPeerClosed)
	}
	s.timer.Stop()
	s.p.mu.Lock()
	s.p.dropLocked(nil, false)
	s.p.mu.Unlock()
	if s.p.conn != nil {
		if err := s.p.conn.Close(); err != nil {
			s.log.Debug("rpc connection close", "err", err)
		}
	}
}
