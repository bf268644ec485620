package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/storage"
)

// presence keeps this node's bindings in the binding store: it batches the
// edge's online/offline events into Bind/Unbind calls and renews the
// node's lease. It is the edge's Listener.
type presence struct {
	n    *Node
	self storage.Node

	mu      sync.Mutex
	pending map[string]struct{} // users whose binding must be written
	done    chan struct{}       // closed when the pending batch is written

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

// bindBatch bounds the users per Bind or Unbind call.
const bindBatch = 1000

func newPresence(n *Node, self storage.Node) *presence {
	return &presence{
		n: n, self: self,
		pending: make(map[string]struct{}),
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
}

// Online implements edge.Listener.
func (p *presence) Online(user string) { p.mark(user) }

// Offline implements edge.Listener.
func (p *presence) Offline(user string) { p.mark(user) }

// Ack implements edge.Listener. Acks are counted by the edge; delivery is
// at-least-once with the store as the record, so nothing else is kept.
func (p *presence) Ack(string, string) {}

func (p *presence) mark(user string) {
	p.mu.Lock()
	p.pending[user] = struct{}{}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Settle implements edge.Listener.
func (p *presence) Settle(ctx context.Context, user string) string {
	p.mu.Lock()
	_, waiting := p.pending[user]
	done := p.done
	p.mu.Unlock()
	if !waiting {
		return ""
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return ""
}

// Cursor implements edge.Listener.
func (p *presence) Cursor() string { return "" }

// start takes the lease (so that bindings are visible from the first
// connection on) and starts the loop that writes bindings and renews it.
func (p *presence) start(ctx context.Context) error {
	if _, err := p.n.cfg.Bindings.Lease(ctx, p.self, p.n.cfg.LeaseTTL); err != nil {
		if !errors.Is(err, storage.ErrUnavailable) {
			return err
		}
		p.n.log.Warn("binding store unavailable at start; will keep trying", "err", err)
	}
	p.wg.Add(1)
	go p.run()
	return nil
}

func (p *presence) run() {
	defer p.wg.Done()
	lease := time.NewTicker(p.n.cfg.LeaseTTL / 3)
	defer lease.Stop()
	// Re-bind one registry shard per step, so every user is written again
	// once per RebindInterval without a burst.
	rebind := time.NewTicker(max(p.n.cfg.RebindInterval/edge.UserShards, time.Millisecond))
	defer rebind.Stop()
	shard := 0
	var retry <-chan time.Time
	for {
		select {
		case <-p.stop:
			p.flush() // the edge is down: this unbinds everyone left
			return
		case <-p.wake:
		case <-retry:
			retry = nil
		case <-lease.C:
			p.renew()
			continue
		case <-rebind.C:
			if p.n.edge != nil {
				for _, u := range p.n.edge.UsersInShard(shard) {
					p.mark(u)
				}
				shard = (shard + 1) % edge.UserShards
			}
		}
		if !p.flush() && retry == nil {
			retry = time.After(time.Second)
		}
	}
}

// flush writes the pending users' bindings as the edge sees them now:
// bound if online, unbound if not. It reports success; failed users stay
// pending for the next try.
func (p *presence) flush() bool {
	p.mu.Lock()
	if len(p.pending) == 0 {
		p.mu.Unlock()
		return true
	}
	users, done := p.pending, p.done
	p.pending, p.done = make(map[string]struct{}), make(chan struct{})
	p.mu.Unlock()
	defer close(done)

	var bind, unbind []string
	for u := range users {
		if p.n.edge != nil && p.n.edge.Online(u) {
			bind = append(bind, u)
		} else {
			unbind = append(unbind, u)
		}
	}
	var failed []string
	for _, op := range []struct {
		users []string
		fn    func(context.Context, storage.Node, []string) error
	}{{bind, p.n.cfg.Bindings.Bind}, {unbind, p.n.cfg.Bindings.Unbind}} {
		for i := 0; i < len(op.users); i += bindBatch {
			chunk := op.users[i:min(i+bindBatch, len(op.users))]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := op.fn(ctx, p.self, chunk)
			cancel()
			if err != nil {
				p.n.metrics.bindErrors.Inc()
				p.n.log.Warn("writing bindings failed; will retry", "users", len(chunk), "err", err)
				failed = append(failed, chunk...)
			}
		}
	}
	if len(failed) == 0 {
		return true
	}
	p.mu.Lock()
	for _, u := range failed {
		p.pending[u] = struct{}{}
	}
	p.mu.Unlock()
	return false
}

// renew renews the lease. A fresh lease means the store forgot this node
// (it restarted empty, or the lease lapsed): every local user is bound again.
func (p *presence) renew() {
	ctx, cancel := context.WithTimeout(context.Background(), p.n.cfg.LeaseTTL/3)
	fresh, err := p.n.cfg.Bindings.Lease(ctx, p.self, p.n.cfg.LeaseTTL)
	cancel()
	if err != nil {
		p.n.metrics.bindErrors.Inc()
		p.n.log.Warn("renewing the binding lease failed", "err", err)
		return
	}
	if !fresh || p.n.edge == nil {
		return
	}
	users := p.n.edge.Users()
	p.n.log.Warn("binding lease was lost; binding every local user again", "users", len(users))
	for _, u := range users {
		p.mark(u)
	}
}

// abort stops the loop without writing anything, as a crash would.
func (p *presence) abort() {
	p.mu.Lock()
	p.pending = make(map[string]struct{}) // nothing more to write
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait()
}

// shutdown stops the loop after a last flush, then removes whatever this
// incarnation still has in the store.
func (p *presence) shutdown(ctx context.Context) error {
	close(p.stop)
	p.wg.Wait()
	if _, err := p.n.cfg.Bindings.Purge(ctx, p.self); err != nil {
		return err
	}
	return nil
}
