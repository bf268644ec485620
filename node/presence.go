package node

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/storage"
)

// presenceEdge is what presence needs of the edge: who is connected.
type presenceEdge interface {
	Online(user string) bool
	Users() []string
	UsersInShard(i int) []string
}

// presence keeps this node's bindings in the binding store: it batches the
// edge's online/offline events into Bind/Unbind calls and renews the
// node's lease. It is the edge's Listener.
//
// It also keeps the node's cursor honest about the binding store
// (sources): the cursor goes no further than the last lease renewal that
// found the lease (and so the bindings) intact; if the store lost them,
// every user is bound again and every connection resyncs from there; and
// while bindings cannot be written, the cursor waits, and the users
// concerned resync once they are.
type presence struct {
	self     storage.Node
	bindings storage.Bindings
	edge     presenceEdge // set before start
	src      *sources
	log      *slog.Logger
	m        *metrics

	leaseTTL, leaseEvery, rebindInterval time.Duration

	mu       sync.Mutex
	pending  map[string]uint64 // user -> generation of its mark
	inflight map[string]uint64 // being written by the flush in progress
	gen      uint64            // generation of the next flush
	written  uint64            // the last generation flushed (written or failed)
	flushed  chan struct{}     // closed when a flush ends
	failing  map[string]struct{}
	rebind   bool // the lease was lost: every user is being bound again
	draining bool // the node drains: no more re-binding

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

// bindBatch bounds the users per Bind or Unbind call.
const bindBatch = 1000

func newPresence(self storage.Node, b storage.Bindings, src *sources, log *slog.Logger, m *metrics, cfg *Config) *presence {
	return &presence{
		self: self, bindings: b, src: src, log: log, m: m,
		leaseTTL:       cfg.LeaseTTL,
		leaseEvery:     min(cfg.LeaseTTL/3, cfg.LeaseCheckInterval),
		rebindInterval: cfg.RebindInterval,
		pending:        make(map[string]uint64),
		failing:        make(map[string]struct{}),
		gen:            1,
		flushed:        make(chan struct{}),
		wake:           make(chan struct{}, 1),
		stop:           make(chan struct{}),
	}
}

// Online implements edge.Listener.
func (p *presence) Online(user string) { p.mark(user) }

// Offline implements edge.Listener.
func (p *presence) Offline(user string) { p.mark(user) }

// Ack implements edge.Listener. Acks are counted by the edge.
func (p *presence) Ack(string, string) {}

// Cursor implements edge.Listener.
func (p *presence) Cursor() string { return p.src.Cursor() }

func (p *presence) mark(user string) {
	p.mu.Lock()
	p.pending[user] = p.gen
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Settle implements edge.Listener: it waits until the flush that carries
// user's binding has run, then returns the node's cursor. If the binding
// could not be written in time, the cursor stays where it is until it is
// (bindsFailing), and the user's connections resync then.
func (p *presence) Settle(ctx context.Context, user string) string {
	for {
		p.mu.Lock()
		g, ok := p.inflight[user]
		if !ok {
			g, ok = p.pending[user]
		}
		if !ok || p.written >= g {
			p.mu.Unlock()
			return p.src.Cursor()
		}
		ch := p.flushed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			p.failing[user] = struct{}{}
			p.mu.Unlock()
			p.src.bindsFailing()
			return p.src.Cursor()
		}
	}
}

// start takes the lease (so that bindings are visible from the first
// connection on) and starts the loop that writes bindings and renews it.
func (p *presence) start(ctx context.Context) error {
	if _, err := p.bindings.Lease(ctx, p.self, p.leaseTTL); err != nil {
		if !errors.Is(err, storage.ErrUnavailable) {
			return err
		}
		p.log.Warn("binding store unavailable at start; will keep trying", "err", err)
	} else {
		p.src.leaseVerified()
	}
	p.wg.Add(1)
	go p.run()
	return nil
}

// setDraining stops re-binding: the node is leaving, and a user it binds
// again now would be routed here after its peers purged it.
func (p *presence) setDraining() {
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
}

func (p *presence) run() {
	defer p.wg.Done()
	lease := time.NewTicker(p.leaseEvery)
	defer lease.Stop()
	// Re-bind one registry shard per step, so every user is written again
	// once per RebindInterval without a burst.
	rebind := time.NewTicker(max(p.rebindInterval/edge.UserShards, time.Millisecond))
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
			if p.edge != nil && !p.isDraining() {
				for _, u := range p.edge.UsersInShard(shard) {
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

func (p *presence) isDraining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.draining
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
	users, g := p.pending, p.gen
	p.pending, p.inflight = make(map[string]uint64), users
	p.gen++
	p.mu.Unlock()

	var bind, unbind []string
	for u := range users {
		if p.edge != nil && p.edge.Online(u) {
			bind = append(bind, u)
		} else {
			unbind = append(unbind, u)
		}
	}
	var failed []string
	for _, op := range []struct {
		users []string
		fn    func(context.Context, storage.Node, []string) error
	}{{bind, p.bindings.Bind}, {unbind, p.bindings.Unbind}} {
		for i := 0; i < len(op.users); i += bindBatch {
			chunk := op.users[i:min(i+bindBatch, len(op.users))]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := op.fn(ctx, p.self, chunk)
			cancel()
			if err != nil {
				p.m.bindErrors.Inc()
				p.log.Warn("writing bindings failed; will retry", "users", len(chunk), "err", err)
				failed = append(failed, chunk...)
			}
		}
	}

	p.mu.Lock()
	p.inflight = nil
	p.written = g
	close(p.flushed)
	p.flushed = make(chan struct{})
	for _, u := range failed {
		if _, again := p.pending[u]; !again {
			p.pending[u] = p.gen
		}
	}
	var healed []string
	rebound := false
	if len(failed) > 0 {
		for _, u := range bind {
			p.failing[u] = struct{}{}
		}
	} else {
		if len(p.failing) > 0 {
			for u := range p.failing {
				if _, again := p.pending[u]; !again {
					healed = append(healed, u)
				}
			}
			if len(healed) == len(p.failing) {
				clear(p.failing)
			} else {
				healed = nil
			}
		}
		if p.rebind && len(p.pending) == 0 {
			p.rebind, rebound = false, true
		}
	}
	p.mu.Unlock()

	switch {
	case len(failed) > 0:
		p.src.bindsFailing()
	case len(healed) > 0:
		p.src.bindsWritten(healed)
	}
	if rebound {
		p.log.Info("every local user is bound again after the binding store lost them; connections resync")
		p.src.leaseRebound()
	}
	return len(failed) == 0
}

// renew renews the lease. A fresh lease means the store forgot this node
// (it restarted empty, or the lease lapsed, or a peer purged it while it
// was thought dead): every local user is bound again, and the cursor waits
// until then.
func (p *presence) renew() {
	ctx, cancel := context.WithTimeout(context.Background(), p.leaseEvery)
	fresh, err := p.bindings.Lease(ctx, p.self, p.leaseTTL)
	cancel()
	if err != nil {
		p.m.bindErrors.Inc()
		p.log.Warn("renewing the binding lease failed", "err", err)
		return
	}
	if !fresh {
		p.mu.Lock()
		rebinding := p.rebind
		p.mu.Unlock()
		if !rebinding {
			p.src.leaseVerified()
		}
		return
	}
	p.m.leaseLost.Inc()
	p.src.leaseLostData()
	if p.edge == nil || p.isDraining() {
		return
	}
	users := p.edge.Users()
	p.log.Warn("binding lease was lost; binding every local user again", "users", len(users))
	p.mu.Lock()
	p.rebind = true
	p.mu.Unlock()
	for _, u := range users {
		p.mark(u)
	}
	if len(users) == 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
		p.mu.Lock()
		empty := len(p.pending) == 0
		if empty {
			p.rebind = false
		}
		p.mu.Unlock()
		if empty {
			p.src.leaseRebound()
		}
	}
}

// abort stops the loop without writing anything, as a crash would.
func (p *presence) abort() {
	p.mu.Lock()
	p.pending = make(map[string]uint64) // nothing more to write
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait()
}

// shutdown stops the loop after a last flush, then removes whatever this
// incarnation still has in the store.
func (p *presence) shutdown(ctx context.Context) error {
	close(p.stop)
	p.wg.Wait()
	if _, err := p.bindings.Purge(ctx, p.self); err != nil {
		return err
	}
	return nil
}
