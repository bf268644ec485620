package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
)

// localEdge is the part of the edge that dispatch delivers to.
type localEdge interface {
	Deliver(f *edge.Frame, users ...string) int
	Broadcast(f *edge.Frame) int
}

// submitter hands stored messages to a dispatch node, for nodes without
// the dispatch role (collect only).
type submitter interface {
	// Submit hands ms to some dispatch node; an error means none took
	// them (try again later).
	Submit(ctx context.Context, ms []*storage.Message) error
}

// dispatcher takes stored messages from collect and routes them: to this
// node's connections through the edge, to other push nodes through their
// RPC peers, or, on a node without the dispatch role, to a dispatch node.
//
// One goroutine drains a bounded intake in batches, so messages leave in
// the order they were accepted and a batch shares its binding lookups. It
// never waits for a peer (peerSender does not block) and never drops a
// message: a full intake makes submit wait, and on a collect-only node a
// batch no dispatch node takes is offered again until one does.
//
// After each batch, and every cursorInterval, it sends its tracker's
// cursor to the push nodes: a push node that has it knows every message
// at or below it that this node routes to it has come.
type dispatcher struct {
	self    string
	in      chan queued
	tracker *tracker
	log     *slog.Logger
	m       *metrics

	// Routing (dispatch role, in a cluster); all nil when standalone.
	locator *locator
	send    *peerSender
	members membership
	// handOff is set instead on a node without the dispatch role.
	handOff submitter
	// local is the edge, on a node with the push role; cursor gives the
	// cursor its frames carry.
	local  localEdge
	cursor func() string

	cursorInterval time.Duration

	touched  []string // push nodes the current batch went to (the run goroutine's)
	stranded bool     // stopped with messages no dispatch node took
	pending  atomic.Int64

	stop    chan struct{}
	drained chan struct{} // closed when run has routed everything and returned
	once    sync.Once
}

// queued is a message waiting for dispatch; tracked ones are open in the
// tracker until routed.
type queued struct {
	m       *storage.Message
	tracked bool
}

// maxDispatchBatch bounds the messages handled per batch.
const maxDispatchBatch = 256

// errStopping: the node stops; the message was not taken.
var errStopping = errors.New("node: stopping")

func (d *dispatcher) start() {
	go d.run()
}

// submit queues a stored message, waiting for room; it fails only once
// the dispatcher has stopped, or ctx ends (then the caller still owns
// the message).
func (d *dispatcher) submit(ctx context.Context, m *storage.Message, tracked bool) error {
	q := queued{m, tracked}
	d.pending.Add(1)
	select {
	case d.in <- q:
		d.m.dispatchQueue.Inc()
		return nil
	default:
	}
	d.m.dispatchWaits.Inc()
	select {
	case d.in <- q:
		d.m.dispatchQueue.Inc()
		return nil
	case <-ctx.Done():
		d.pending.Add(-1)
		return ctx.Err()
	case <-d.stop:
		d.pending.Add(-1)
		return errStopping
	}
}

// drain waits until every message submitted so far has been routed (or
// handed to a dispatch node), and, with the dispatch role, until every
// push node has acked what it was sent; or until ctx ends.
func (d *dispatcher) drain(ctx context.Context) error {
	for d.pending.Load() > 0 {
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%d messages not routed: %w", d.pending.Load(), ctx.Err())
		}
	}
	if d.stranded {
		return errors.New("messages no dispatch node took")
	}
	return nil
}

func (d *dispatcher) run() {
	defer close(d.drained)
	batch := make([]queued, 0, maxDispatchBatch)
	tick := time.NewTicker(d.cursorInterval)
	defer tick.Stop()
	for {
		select {
		case q := <-d.in:
			batch = append(batch[:0], q)
		case <-tick.C:
			d.heartbeat()
			continue
		case <-d.stop:
			// Route what is left, then stop.
			for {
				select {
				case q := <-d.in:
					batch = append(batch[:0], q)
					d.fill(&batch)
					d.handle(batch)
					clear(batch)
				default:
					d.heartbeat()
					return
				}
			}
		}
		d.fill(&batch)
		d.handle(batch)
		clear(batch)
	}
}

// fill adds what else is queued, up to a batch.
func (d *dispatcher) fill(batch *[]queued) {
	for len(*batch) < maxDispatchBatch {
		select {
		case q := <-d.in:
			*batch = append(*batch, q)
		default:
			return
		}
	}
}

func (d *dispatcher) handle(batch []queued) {
	d.m.dispatchQueue.Sub(float64(len(batch)))
	if d.handOff != nil {
		if !d.handOffBatch(batch) {
			d.pending.Add(-int64(len(batch)))
			return // stopping: they stay open
		}
	} else {
		d.route(batch)
	}
	for _, q := range batch {
		if q.tracked {
			d.tracker.Done(q.m.ID)
		}
		d.m.dispatchLatency.Observe(time.Since(q.m.CreatedAt).Seconds())
	}
	d.pending.Add(-int64(len(batch)))
	if d.send != nil {
		// The push nodes this batch went to get the cursor at once, riding
		// with the batch; the others on the next heartbeat.
		d.send.Cursor(d.tracker.Cursor(), d.touched)
		d.touched = d.touched[:0]
	}
}

// heartbeat sends the cursor to every push node.
func (d *dispatcher) heartbeat() {
	if d.send == nil || d.members == nil {
		return
	}
	d.send.Expire(time.Now())
	push := d.members.PushNodes()
	for i, id := range push {
		if id == d.self {
			push = append(push[:i], push[i+1:]...)
			break
		}
	}
	d.send.Cursor(d.tracker.Cursor(), push)
}

// route delivers a batch: local connections through the edge, remote
// push nodes through their peers.
func (d *dispatcher) route(batch []queued) {
	var where route
	if d.locator != nil {
		where = d.locator.locate(recipients(batch))
	}
	var push []string
	for _, q := range batch {
		m := q.m
		if d.local != nil {
			f := edge.EncodeMessage(m.ID, m.Data, m.CreatedAt, d.cursor())
			var conns int
			if m.Broadcast {
				conns = d.local.Broadcast(f)
			} else {
				conns = d.local.Deliver(f, m.To...)
			}
			d.m.delivered.Add(float64(conns))
		}
		if d.send == nil {
			continue
		}
		if m.Broadcast {
			if push == nil {
				push = everyPushNode(d.members) // a departing node may come back: it waits for it
			}
			for _, id := range push {
				if id != d.self {
					d.sendTo(id, rpc.Delivery{Message: m})
				}
			}
			continue
		}
		for _, h := range where.split(m.To) {
			mm := *m
			mm.To = h.users
			dl := rpc.Delivery{Message: &mm}
			if h.guessed {
				dl.Hops = 1 // the node holds them or nobody does: no second lookup
			}
			d.sendTo(h.node, dl)
		}
	}
}

func (d *dispatcher) sendTo(id string, dl rpc.Delivery) {
	d.send.Send(id, dl)
	d.m.forwarded.Inc()
	for _, t := range d.touched {
		if t == id {
			return
		}
	}
	d.touched = append(d.touched, id)
}

// recipients lists the distinct recipients of a batch's direct messages.
func recipients(batch []queued) []string {
	seen := make(map[string]struct{})
	var users []string
	for _, q := range batch {
		for _, u := range q.m.To {
			if _, ok := seen[u]; !ok {
				seen[u] = struct{}{}
				users = append(users, u)
			}
		}
	}
	return users
}

// handOffBatch gives a batch to a dispatch node, trying again (with
// backoff) until one takes it or the node stops: the messages are
// accepted, so they must be routed. It reports whether one took it.
func (d *dispatcher) handOffBatch(batch []queued) bool {
	ms := make([]*storage.Message, len(batch))
	for i, q := range batch {
		ms[i] = q.m
	}
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.handOff.Submit(ctx, ms)
		cancel()
		if err == nil {
			return true
		}
		if attempt == 1 || attempt%20 == 0 {
			d.log.Warn("no dispatch node took the messages; trying again", "messages", len(ms), "attempt", attempt, "err", err)
		}
		d.m.handOffRetries.Inc()
		t := time.NewTimer(time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64())))
		select {
		case <-t.C:
		case <-d.stop:
			t.Stop()
			// Stopping with messages no dispatch node took: they stay open
			// in the tracker, so the cursor this node last sent holds the
			// push nodes back until they recover them (it never ends its
			// sessions cleanly now).
			d.log.Error("stopping with messages no dispatch node took", "messages", len(ms))
			d.stranded = true
			return false
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// shutdown stops taking messages, routes what was queued, and waits.
func (d *dispatcher) shutdown() {
	d.once.Do(func() { close(d.stop) })
	<-d.drained
}
