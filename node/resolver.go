package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/storage"
)

// resolver settles appends whose outcome was lost: the store did not
// answer in time (the POST got 503), yet may have written the message.
// Each such message keeps its ID open in the tracker, so no push node's
// cursor passes it, until the store says (Messages.Resolve) whether it is
// stored: then it is dispatched like any accepted message (a retry of the
// POST with the same key finds it and is dispatched too: clients drop the
// second copy by ID), or it is fenced and its ID closed.
type resolver struct {
	store    storage.Messages
	dispatch func(*storage.Message) error // submit, tracked
	done     func(id string)              // close the ID
	log      *slog.Logger
	m        *metrics
	max      int

	mu   sync.Mutex
	q    []*storage.Message
	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

func newResolver(store storage.Messages, dispatch func(*storage.Message) error, done func(string), log *slog.Logger, m *metrics, max int) *resolver {
	return &resolver{store: store, dispatch: dispatch, done: done, log: log, m: m, max: max,
		wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// full reports whether the resolver takes no more: the store is down, and
// the collector should refuse POSTs before writing anything.
func (r *resolver) full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.q) >= r.max
}

// add takes m, whose append's outcome is unknown.
func (r *resolver) add(m *storage.Message) {
	r.mu.Lock()
	r.q = append(r.q, m)
	r.m.unresolved.Set(float64(len(r.q)))
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// pending returns how many appends wait to be settled.
func (r *resolver) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.q)
}

func (r *resolver) start() {
	r.wg.Add(1)
	go r.run()
}

func (r *resolver) run() {
	defer r.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := 200 * time.Millisecond
	for {
		select {
		case <-r.stop:
			return
		case <-r.wake:
		case <-time.After(wait):
		}
		r.mu.Lock()
		batch := r.q
		r.q = nil
		r.mu.Unlock()
		left := r.pass(ctx, batch)
		r.mu.Lock()
		r.q = append(left, r.q...)
		n := len(r.q)
		r.mu.Unlock()
		r.m.unresolved.Set(float64(n))
		if len(left) > 0 {
			wait = min(2*wait, 5*time.Second)
		} else {
			wait = 200 * time.Millisecond
		}
	}
}

// resolveParallel is how many Resolve calls a pass makes at once: after
// an outage thousands may wait, and one round trip each in turn would
// hold the node's cursor back for minutes.
const resolveParallel = 16

// pass settles what it can of batch, resolveParallel at a time, and
// returns the rest, in order. It stops at the first failure: the store is
// still down or overloaded, and asking it about every message in turn,
// each until its timeout, would only add to its load.
func (r *resolver) pass(ctx context.Context, batch []*storage.Message) []*storage.Message {
	settled := make([]bool, len(batch))
	var failed atomic.Bool
	for start := 0; start < len(batch) && !failed.Load() && ctx.Err() == nil; start += resolveParallel {
		end := min(start+resolveParallel, len(batch))
		var wg sync.WaitGroup
		for i := start; i < end; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if settled[i] = r.settle(ctx, batch[i]); !settled[i] {
					failed.Store(true)
				}
			}()
		}
		wg.Wait()
	}
	var left []*storage.Message
	for i, m := range batch {
		if !settled[i] {
			left = append(left, m)
		}
	}
	return left
}

// settle asks the store about m; false means it could not tell yet.
func (r *resolver) settle(ctx context.Context, m *storage.Message) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	got, err := r.store.Resolve(ctx, m)
	cancel()
	switch {
	case err != nil:
		r.log.Debug("settling an append failed; will try again", "id", m.ID, "err", err)
		return false
	case got == nil:
		r.m.resolved.WithLabelValues("fenced").Inc()
		r.done(m.ID)
		return true
	case !got.ExpiresAt.After(time.Now()):
		r.m.resolved.WithLabelValues("expired").Inc()
		r.done(m.ID)
		return true
	}
	r.m.resolved.WithLabelValues("stored").Inc()
	r.log.Info("an append that timed out was stored after all; dispatching it", "id", m.ID)
	// If dispatch has stopped, the ID stays open: the node stops as a
	// crashed one would, and its peers recover the message from the store.
	_ = r.dispatch(got)
	return true
}

// drain waits until nothing is left to settle, or ctx ends.
func (r *resolver) drain(ctx context.Context) error {
	for {
		if r.pending() == 0 {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

func (r *resolver) shutdown() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}
