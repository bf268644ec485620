package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
)

// dispatcher takes durable messages from collect and delivers them. One
// goroutine drains a bounded queue in batches: messages leave in the order
// they were accepted (per destination node too, since each node's RPC
// stream is FIFO), and a batch shares its binding lookups.
type dispatcher struct {
	n    *Node
	in   chan *storage.Message
	stop chan struct{}
	wg   sync.WaitGroup
	next atomic.Uint64 // round robin over dispatch nodes, for collect-only nodes

	// Deliveries for nodes the binding store names but membership does not
	// know yet (a node that just joined, whose clients bound before its
	// gossip reached us). They wait up to DeferTimeout for the node.
	defMu    sync.Mutex
	deferred map[string][]deferredDelivery
	defCount int
	wake     chan struct{}
}

type deferredDelivery struct {
	d     rpc.Delivery
	until time.Time
}

// maxDeferred bounds the deliveries waiting for unknown nodes.
const maxDeferred = 100000

// maxDispatchBatch bounds the messages handled per batch.
const maxDispatchBatch = 256

// enqueueTimeout bounds how long dispatch waits for room in one peer's RPC
// queue; past it the delivery is skipped (the message waits for replay).
const enqueueTimeout = time.Second

func newDispatcher(n *Node) *dispatcher {
	return &dispatcher{n: n, in: make(chan *storage.Message, n.cfg.DispatchQueue), stop: make(chan struct{}),
		deferred: make(map[string][]deferredDelivery), wake: make(chan struct{}, 1)}
}

// known tells the dispatcher that membership learned about node id, so its
// deferred deliveries can go. It never blocks.
func (d *dispatcher) known(string) {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) start() {
	d.wg.Add(1)
	go d.run()
}

// submit queues a stored message, waiting for room while ctx lasts. A
// message that does not fit in time stays in the store for replay.
func (d *dispatcher) submit(ctx context.Context, m *storage.Message) {
	select {
	case d.in <- m:
		d.n.metrics.dispatchQueue.Inc()
		return
	default:
	}
	select {
	case d.in <- m:
		d.n.metrics.dispatchQueue.Inc()
	case <-ctx.Done():
		d.n.metrics.dispatchDropped.Inc()
		d.n.log.Warn("dispatch queue full; message left for replay", "id", m.ID)
	case <-d.stop:
		d.n.metrics.dispatchDropped.Inc()
	}
}

func (d *dispatcher) run() {
	defer d.wg.Done()
	batch := make([]*storage.Message, 0, maxDispatchBatch)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case m := <-d.in:
			batch = append(batch[:0], m)
		case <-d.wake:
			d.flushDeferred()
			continue
		case <-tick.C:
			d.flushDeferred()
			continue
		case <-d.stop:
			return
		}
	more:
		for len(batch) < maxDispatchBatch {
			select {
			case m := <-d.in:
				batch = append(batch, m)
			default:
				break more
			}
		}
		d.n.metrics.dispatchQueue.Sub(float64(len(batch)))
		if d.n.cfg.Has(RoleDispatch) || d.n.cluster == nil {
			d.deliver(batch)
		} else {
			d.handOff(batch)
		}
		clear(batch)
	}
}

// deliver routes a batch: local connections through the edge, remote push
// nodes through RPC.
func (d *dispatcher) deliver(batch []*storage.Message) {
	n := d.n
	where := d.locate(batch)
	for _, m := range batch {
		if n.edge != nil {
			f := edge.EncodeMessage(m.ID, m.Data, m.CreatedAt, "")
			var conns int
			if m.Broadcast {
				conns = n.edge.Broadcast(f)
			} else {
				conns = n.edge.Deliver(f, m.To...)
			}
			n.metrics.delivered.Add(float64(conns))
		}
		if n.cluster != nil {
			if m.Broadcast {
				for _, p := range n.cluster.withRole(RolePush) {
					if p.ID != n.self.ID {
						d.forward(p.ID, rpc.Delivery{Message: m})
					}
				}
			} else {
				for h, users := range where.split(m.To) {
					mm := *m
					mm.To = users
					dl := rpc.Delivery{Message: &mm}
					if h.guessed {
						dl.Hops = 1 // the owner holds them or nobody does: no second lookup
					}
					d.forward(h.node, dl)
				}
			}
		}
		n.metrics.dispatchLatency.Observe(time.Since(m.CreatedAt).Seconds())
	}
}

// locate finds the remote push nodes of the batch's recipients (see
// resolve). This node is left out: local delivery needs no lookup.
func (d *dispatcher) locate(batch []*storage.Message) route {
	n := d.n
	if n.cluster == nil {
		return route{}
	}
	seen := make(map[string]struct{})
	var users []string
	for _, m := range batch {
		for _, u := range m.To {
			if _, ok := seen[u]; !ok {
				seen[u] = struct{}{}
				users = append(users, u)
			}
		}
	}
	if len(users) == 0 {
		return route{}
	}
	return n.resolve(users, true)
}

// resolve maps users to the remote push nodes holding them, as the binding
// store says, keeping only live push members.
//
// With ringFallback, a user the store has no binding for goes to its ring
// owner, where clients are steered, marked as guessed: bindings can lag
// (written just after a connect, lost with a Redis that restarted empty,
// failed during an outage) and the owner delivers if it holds the user.
// When the store fails, every user is guessed that way. Without
// ringFallback (a push node re-resolving a miss), only bindings count.
func (n *Node) resolve(users []string, ringFallback bool) route {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LookupTimeout)
	bound, err := n.cfg.Bindings.Lookup(ctx, users)
	cancel()
	where := route{nodes: make(map[string][]string, len(users)), guessed: make(map[string]bool)}
	if err != nil {
		n.metrics.lookupErrors.Inc()
		if !ringFallback {
			return where
		}
		n.log.Debug("binding lookup failed; routing by ring", "users", len(users), "err", err)
		bound = nil
	}
	snap := n.cluster.ring.Snapshot()
	for _, u := range users {
		nodes, ok := bound[u]
		if !ok {
			if !ringFallback {
				continue
			}
			if owner, ok := snap.Owner(u); ok && owner != n.self.ID {
				where.nodes[u] = []string{owner}
				where.guessed[u] = true
				n.metrics.ringRouted.Inc()
			}
			continue
		}
		for _, id := range nodes {
			if id == n.self.ID {
				continue
			}
			// A node not known yet is kept: forward waits a little for it.
			if m, ok := n.cluster.member(id); !ok || m.HasRole(string(RolePush)) {
				where.nodes[u] = append(where.nodes[u], id)
			}
		}
	}
	return where
}

// route says where recipients are: nodes per user, and which users were
// only guessed (their ring owner, for want of a binding).
type route struct {
	nodes   map[string][]string
	guessed map[string]bool
}

// hop is one delivery to make: users on a node, and whether they were
// guessed (a guessed delivery is not looked up again on a miss).
type hop struct {
	node    string
	guessed bool
}

// split groups recipients by destination node and guessing.
func (r route) split(to []string) map[hop][]string {
	out := make(map[hop][]string)
	for _, u := range to {
		for _, node := range r.nodes[u] {
			h := hop{node, r.guessed[u]}
			out[h] = append(out[h], u)
		}
	}
	return out
}

// forward queues a delivery for remote push node id. A node membership
// does not know yet gets it once it appears, within DeferTimeout; earlier
// deliveries deferred for the node go first.
func (d *dispatcher) forward(id string, dl rpc.Delivery) {
	d.defMu.Lock()
	p, ok := d.n.cluster.member(id)
	if !ok {
		if d.defCount >= maxDeferred {
			d.defMu.Unlock()
			d.n.metrics.forwardFailed.Inc()
			return
		}
		d.deferred[id] = append(d.deferred[id], deferredDelivery{dl, time.Now().Add(d.n.cfg.DeferTimeout)})
		d.defCount++
		d.defMu.Unlock()
		d.n.metrics.deferred.Inc()
		return
	}
	pending := d.deferred[id]
	if pending != nil {
		delete(d.deferred, id)
		d.defCount -= len(pending)
	}
	d.defMu.Unlock()
	now := time.Now()
	for _, x := range pending {
		if now.Before(x.until) {
			d.enqueue(p.RPCAddr, x.d)
		} else {
			d.n.metrics.forwardFailed.Inc()
		}
	}
	d.enqueue(p.RPCAddr, dl)
}

// flushDeferred forwards what waited for nodes now known and drops what
// waited too long (the messages wait for replay).
func (d *dispatcher) flushDeferred() {
	d.defMu.Lock()
	var ready []string
	now := time.Now()
	for id, pending := range d.deferred {
		if _, ok := d.n.cluster.member(id); ok {
			ready = append(ready, id)
			continue
		}
		keep := pending[:0]
		for _, x := range pending {
			if now.Before(x.until) {
				keep = append(keep, x)
			}
		}
		if dropped := len(pending) - len(keep); dropped > 0 {
			d.defCount -= dropped
			d.n.metrics.forwardFailed.Add(float64(dropped))
		}
		if len(keep) == 0 {
			delete(d.deferred, id)
		} else {
			d.deferred[id] = keep
		}
	}
	d.defMu.Unlock()
	for _, id := range ready {
		d.forward(id, rpc.Delivery{})
	}
}

// enqueue hands a delivery to a peer's RPC queue, waiting a bounded time.
func (d *dispatcher) enqueue(addr string, dl rpc.Delivery) {
	if dl.Message == nil {
		return // a flush without a delivery of its own
	}
	ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
	err := d.n.cluster.rpc.Peer(addr).Enqueue(ctx, dl)
	cancel()
	if err != nil {
		d.n.metrics.forwardFailed.Inc()
		d.n.log.Debug("forward skipped; the message waits for replay", "peer", addr, "id", dl.Message.ID, "err", err)
		return
	}
	d.n.metrics.forwarded.Inc()
}

// handOff sends a batch to a dispatch node, for nodes without the dispatch
// role (collect only). Dispatch nodes are tried round robin.
func (d *dispatcher) handOff(batch []*storage.Message) {
	targets := d.n.cluster.withRole(RoleDispatch)
	start := int(d.next.Add(1))
	for i := range targets {
		t := targets[(start+i)%len(targets)]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.n.cluster.rpc.Peer(t.RPCAddr).Submit(ctx, batch)
		cancel()
		if err == nil {
			return
		}
		d.n.log.Warn("handing messages to a dispatch node failed", "node", t.ID, "err", err)
	}
	d.n.metrics.dispatchDropped.Add(float64(len(batch)))
	d.n.log.Warn("no dispatch node took the batch; messages wait for replay", "messages", len(batch), "dispatch_nodes", len(targets))
}

func (d *dispatcher) shutdown() {
	close(d.stop)
	d.wg.Wait()
}

// deliveryFailed is called by the RPC client for deliveries a peer did not
// ack; the messages are durable, so they wait for replay.
func (n *Node) deliveryFailed(addr string, ds []rpc.Delivery, err error) {
	n.metrics.forwardFailed.Add(float64(len(ds)))
	n.log.Debug("deliveries to a peer failed; the messages wait for replay", "peer", addr, "deliveries", len(ds), "err", err)
}

// rpcHandler serves the node's internal RPC.
type rpcHandler struct{ n *Node }

// Deliver delivers messages another node routed here. A recipient with no
// connection here is looked up again once, and forwarded to where it is
// now (hops 0 only), else left for replay.
func (h rpcHandler) Deliver(_ context.Context, ds []rpc.Delivery) error {
	n := h.n
	if n.edge == nil {
		return errors.New("this node has no push role")
	}
	for _, dl := range ds {
		m := dl.Message
		f := edge.EncodeMessage(m.ID, m.Data, m.CreatedAt, "")
		if m.Broadcast {
			n.metrics.delivered.Add(float64(n.edge.Broadcast(f)))
			continue
		}
		var missing []string
		for _, u := range m.To {
			if c := n.edge.Deliver(f, u); c > 0 {
				n.metrics.delivered.Add(float64(c))
			} else {
				missing = append(missing, u)
			}
		}
		if len(missing) == 0 || dl.Hops > 0 || n.cluster == nil {
			continue
		}
		n.metrics.misrouted.Add(float64(len(missing)))
		for h, users := range n.resolve(missing, false).split(missing) {
			mm := *m
			mm.To = users
			n.dispatch.forward(h.node, rpc.Delivery{Message: &mm, Hops: dl.Hops + 1})
		}
	}
	return nil
}

// Submit takes stored messages from a collect-only node.
func (h rpcHandler) Submit(ctx context.Context, ms []*storage.Message) error {
	if !h.n.cfg.Has(RoleDispatch) {
		return errors.New("this node has no dispatch role")
	}
	for _, m := range ms {
		h.n.dispatch.submit(ctx, m)
	}
	return nil
}

// Verify checks a token for a push node without the auth role.
func (h rpcHandler) Verify(ctx context.Context, token string) (auth.Identity, error) {
	if !h.n.cfg.Has(RoleAuth) || h.n.cfg.Auth == nil {
		return auth.Identity{}, fmt.Errorf("%w: this node has no auth role", auth.ErrUnavailable)
	}
	return h.n.cfg.Auth.Authenticate(ctx, token)
}

// clusterAuth verifies tokens with the cluster's auth nodes, for a push
// node without the auth role or an auth URL.
type clusterAuth struct {
	n    *Node
	next atomic.Uint64
}

func (a *clusterAuth) Authenticate(ctx context.Context, token string) (auth.Identity, error) {
	nodes := a.n.cluster.withRole(RoleAuth)
	if len(nodes) == 0 {
		return auth.Identity{}, fmt.Errorf("%w: no auth node in the cluster", auth.ErrUnavailable)
	}
	start := int(a.next.Add(1))
	var err error
	for i := range min(len(nodes), 2) { // one retry on another auth node
		p := nodes[(start+i)%len(nodes)]
		var id auth.Identity
		id, err = a.n.cluster.rpc.Peer(p.RPCAddr).Verify(ctx, token)
		if err == nil || errors.Is(err, auth.ErrInvalidToken) {
			return id, err
		}
	}
	return auth.Identity{}, err
}
