package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
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
)

// sender is a peer's one sender goroutine: it drains the queue into
// batches on one Deliver stream at a time. Everything here is touched by
// that goroutine only, but for the stream's receiver and watchdog, which
// talk to it through stream.
type sender struct {
	p   *Peer
	cfg *ClientConfig
	m   *clientMetrics
	log *slog.Logger

	st       *stream  // nil while not connected
	seq      uint64   // last batch number sent on st
	inflight []*batch // sent on st, not yet acked, oldest first

	pending      []item // taken from the queue for the next batch
	pendingBytes int
	pendingFull  bool

	timer    *time.Timer   // the batch delay while connected; pauses while not
	backoff  time.Duration // the last pause between attempts; 0 after success
	lastErr  error         // why the peer could not be reached
	failing  bool          // the last attempt failed (logged once, not each time)
	acked    bool          // the current stream has had an ack
	firstErr time.Time     // when the peer became unreachable
}

// batch is one DeliverBatch in flight.
type batch struct {
	seq  uint64
	ds   []Delivery
	sent time.Time
}

type ack struct {
	seq uint64
	err string
}

// stream is one Deliver stream and its receiver goroutine.
type stream struct {
	cs     grpc.BidiStreamingClient[rpcpb.DeliverBatch, rpcpb.DeliverAck]
	ctx    context.Context
	cancel context.CancelCauseFunc
	acks   chan ack
	done   chan struct{} // closed when the receiver has exited
	err    error         // why it exited; read after done

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
		if !s.hasWork() {
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

func (s *sender) hasWork() bool {
	if len(s.pending) > 0 {
		return true
	}
	_, ok := s.p.oldest()
	return ok
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

// pause waits d, or until the peer is closed, failing meanwhile whatever
// has waited longer than QueueTimeout.
func (s *sender) pause(d time.Duration) {
	end := time.Now().Add(d)
	for {
		now := time.Now()
		s.age(now)
		wait := end.Sub(now)
		if wait <= 0 {
			return
		}
		if at, ok := s.oldestItem(); ok {
			wait = min(wait, max(at.Add(s.cfg.QueueTimeout).Sub(now), time.Millisecond))
		}
		s.timer.Reset(wait)
		select {
		case <-s.timer.C:
		case <-s.p.ctx.Done():
			s.timer.Stop()
			return
		}
	}
}

func (s *sender) oldestItem() (time.Time, bool) {
	if len(s.pending) > 0 {
		return s.pending[0].at, true
	}
	return s.p.oldest()
}

// age fails the deliveries, pending or queued, enqueued more than
// QueueTimeout before now.
func (s *sender) age(now time.Time) {
	cutoff := now.Add(-s.cfg.QueueTimeout)
	var ds []Delivery
	k := 0
	for k < len(s.pending) && s.pending[k].at.Before(cutoff) {
		ds = append(ds, s.pending[k].d)
		k++
	}
	if k > 0 {
		n := copy(s.pending, s.pending[k:])
		clear(s.pending[n:])
		s.pending = s.pending[:n]
		s.pendingBytes = 0
		for _, it := range s.pending {
			s.pendingBytes += it.size
		}
		s.pendingFull = false
	}
	if len(s.pending) == 0 { // the queue is younger than anything pending
		ds = append(ds, s.p.takeOlder(cutoff)...)
	}
	if len(ds) > 0 {
		cause := s.lastErr
		if cause == nil {
			cause = fmt.Errorf("%w: %s", ErrUnavailable, s.p.addr)
		}
		err := fmt.Errorf("rpc: queued longer than %v: %w", s.cfg.QueueTimeout, cause)
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		s.fail(ds, err)
	}
}

// fail reports ds to OnFailed and counts them done.
func (s *sender) fail(ds []Delivery, err error) {
	if len(ds) == 0 {
		return
	}
	s.m.failed.Add(float64(len(ds)))
	if s.cfg.OnFailed != nil {
		s.cfg.OnFailed(s.p.addr, ds, err)
	}
	s.p.completed(len(ds))
}

// open opens a Deliver stream and waits, at most DialTimeout, for the
// server to accept it.
func (s *sender) open() error {
	if s.p.connErr != nil {
		return s.p.connErr
	}
	ctx, cancel := context.WithCancelCause(s.p.ctx)
	t := time.AfterFunc(s.cfg.DialTimeout, func() { cancel(errDialDeadline) })
	cs, err := s.p.rpc.Deliver(ctx, grpc.WaitForReady(true))
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
			err = fmt.Errorf("%w: no stream to %s within %v", ErrUnavailable, s.p.addr, s.cfg.DialTimeout)
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

// serve runs the stream until it breaks or the peer is closed.
func (s *sender) serve() {
	st := s.st
	delayArmed, delayDone := false, false
	for {
		room := len(s.inflight) < s.cfg.Window
		if room && !s.pendingFull {
			s.pending, s.pendingBytes, s.pendingFull = s.p.take(s.pending, s.cfg.BatchMax, s.cfg.BatchMaxBytes, s.pendingBytes)
		}
		if room && len(s.pending) > 0 && (s.pendingFull || s.cfg.BatchDelay <= 0 || delayDone) {
			if delayArmed {
				s.timer.Stop()
			}
			delayArmed, delayDone = false, false
			if err := s.send(); err != nil {
				s.teardown(err)
				return
			}
			continue
		}
		if len(s.pending) > 0 && !delayArmed && !delayDone {
			s.timer.Reset(s.cfg.BatchDelay)
			delayArmed = true
		}
		var notify <-chan struct{}
		if room && !s.pendingFull {
			notify = s.p.notify
		}
		var delay <-chan time.Time
		if delayArmed {
			delay = s.timer.C
		}
		select {
		case <-notify:
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
		case <-s.p.ctx.Done():
			if delayArmed {
				s.timer.Stop()
			}
			s.teardown(errPeerClosed)
			return
		}
	}
}

// send sends the pending deliveries as one batch.
func (s *sender) send() error {
	n := len(s.pending)
	ds := make([]Delivery, n)
	for i := range s.pending {
		ds[i] = s.pending[i].d
	}
	clear(s.pending)
	s.pending, s.pendingBytes, s.pendingFull = s.pending[:0], 0, false
	s.seq++
	b := &batch{seq: s.seq, ds: ds, sent: time.Now()}
	s.inflight = append(s.inflight, b)
	if len(s.inflight) == 1 {
		s.st.setDeadline(b.sent, true)
	}
	s.m.sent.Add(float64(n))
	s.m.inFlight.Add(float64(n))
	s.m.batch.Observe(float64(n))
	return s.st.cs.Send(&rpcpb.DeliverBatch{Seq: b.seq, Deliveries: deliveriesToProto(ds)})
}

// ack completes the batches up to a.seq (acks are cumulative; the server
// sends one per batch, in order).
func (s *sender) ack(a ack) error {
	if len(s.inflight) == 0 || a.seq < s.inflight[0].seq || a.seq > s.inflight[len(s.inflight)-1].seq {
		return fmt.Errorf("rpc: %s acked batch %d, which is not in flight", s.p.addr, a.seq)
	}
	k := 0
	for ; k < len(s.inflight) && s.inflight[k].seq <= a.seq; k++ {
		b := s.inflight[k]
		n := len(b.ds)
		s.m.inFlight.Sub(float64(n))
		if b.seq == a.seq && a.err != "" {
			s.fail(b.ds, fmt.Errorf("%w: %s: %s", ErrRejected, s.p.addr, a.err))
			continue
		}
		s.m.acked.Add(float64(n))
		s.p.completed(n)
	}
	m := copy(s.inflight, s.inflight[k:])
	clear(s.inflight[m:])
	s.inflight = s.inflight[:m]
	if len(s.inflight) > 0 {
		s.st.setDeadline(s.inflight[0].sent, false)
	} else {
		s.st.setDeadline(time.Time{}, false)
	}
	s.acked = true
	s.backoff = 0
	return nil
}

// teardown ends the stream and fails every batch it has not acked. err is
// what the sender saw (nil if the receiver saw it first).
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
	cause := context.Cause(st.ctx)
	var reason error
	switch {
	case s.p.ctx.Err() != nil:
		reason = fmt.Errorf("%w: peer %s removed or client closed", ErrClosed, s.p.addr)
	case errors.Is(cause, errAckDeadline):
		reason = fmt.Errorf("%w: %s did not ack within %v", ErrAckTimeout, s.p.addr, s.cfg.AckTimeout)
	case err == nil || errors.Is(err, io.EOF):
		reason = s.streamError(st.err)
	default:
		reason = s.streamError(err)
	}
	n := 0
	for _, b := range s.inflight {
		n += len(b.ds)
		s.m.inFlight.Sub(float64(len(b.ds)))
		s.fail(b.ds, reason)
	}
	clear(s.inflight)
	s.inflight = s.inflight[:0]
	if errors.Is(reason, ErrClosed) {
		s.log.Debug("rpc deliver stream closed", "failed", n)
		return
	}
	s.lastErr = reason
	s.log.Warn("rpc deliver stream ended", "err", reason, "failed", n)
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

// finish fails everything left, in order, once the peer is closed, and
// closes its connection.
func (s *sender) finish() {
	if s.st != nil {
		s.teardown(errPeerClosed)
	}
	s.timer.Stop()
	closed := fmt.Errorf("%w: peer %s removed or client closed", ErrClosed, s.p.addr)
	if len(s.pending) > 0 {
		ds := make([]Delivery, len(s.pending))
		for i, it := range s.pending {
			ds[i] = it.d
		}
		clear(s.pending)
		s.pending = s.pending[:0]
		s.fail(ds, closed)
	}
	// The peer is closed, so nothing is enqueued any more.
	s.fail(s.p.takeOlder(time.Time{}), closed)
	if s.p.conn != nil {
		if err := s.p.conn.Close(); err != nil {
			s.log.Debug("rpc connection close", "err", err)
		}
	}
}
