package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/heraldpush/herald/gossip"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/storage"
)

// cluster is the node's view of the other nodes: who is alive, with which
// roles and addresses, the ring over push nodes, and the RPC peers. One
// goroutine applies gossip events; everything else reads snapshots.
type cluster struct {
	n      *Node
	gossip *gossip.Gossip
	ring   *ring.Ring
	rpc    *rpc.Client
	server *rpc.Server

	mu      sync.RWMutex
	members map[string]gossip.Member // by node ID: the live incarnation
	// departing holds the push nodes gossip lost, by ID, until their
	// DepartGrace ends or they are back (Departing).
	departing map[string]gossip.Member
	gone      map[string]goneMember // collect-only nodes that left, until forgotten

	done chan struct{}
}

// goneMember is a collect-only node gossip says is gone, whose cursor this
// dispatch node still holds to until its lease shows it is dead.
type goneMember struct {
	m              gossip.Member
	leaseDeadSince time.Time
}

func newCluster(n *Node) (*cluster, error) {
	c := &cluster{n: n, members: make(map[string]gossip.Member), departing: make(map[string]gossip.Member),
		gone: make(map[string]goneMember), done: make(chan struct{})}
	var err error
	if c.ring, err = ring.New(n.cfg.Ring); err != nil {
		return nil, err
	}
	rc := n.cfg.RPC
	rc.Secret = n.cfg.ClusterSecret
	rc.Source = rpc.Source{ID: n.self.ID, Incarnation: n.self.Incarnation}
	rc.Cursors = n.cfg.Has(RoleDispatch)
	rc.Logger = n.log.With("part", "rpc")
	rc.Registerer = n.reg
	if c.rpc, err = rpc.NewClient(rc); err != nil {
		return nil, err
	}
	if c.server, err = rpc.NewServer(rpc.ServerConfig{
		Addr: n.cfg.RPCAddr, Secret: n.cfg.ClusterSecret, Handler: rpcHandler{n},
		MaxRecvMsgBytes: 64 << 20, Logger: n.log.With("part", "rpc"),
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// start serves RPC, then joins the cluster advertising it.
func (c *cluster) start(ctx context.Context, publicURL string) error {
	if err := c.server.Start(); err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	gc := c.n.cfg.Gossip
	gc.Meta = c.meta(publicURL, "running")
	gc.ClusterSecret = c.n.cfg.ClusterSecret
	gc.Logger = c.n.log.With("part", "gossip")
	gc.Registerer = c.n.reg
	g, err := gossip.New(gc)
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		_ = g.Shutdown(context.Background())
		return fmt.Errorf("gossip: %w", err)
	}
	c.gossip = g
	// The join's state exchange already told gossip about the seeds'
	// members: take that view now, before serving, rather than waiting for
	// the queued events (which replay it, harmlessly).
	for _, m := range g.Members() {
		c.apply(gossip.Event{Type: gossip.Join, Member: m})
	}
	c.apply(gossip.Event{Type: gossip.Join, Member: g.Local()})
	go c.run()
	if c.n.cfg.Has(RoleDispatch) && c.n.cfg.Bindings != nil {
		c.n.bg.Add(1)
		go func() {
			defer c.n.bg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for {
				select {
				case <-c.n.stop:
					return
				case <-t.C:
					c.checkUpstream(ctx)
				}
			}
		}()
	}
	return nil
}

func (c *cluster) meta(publicURL, state string) gossip.Meta {
	roles := make([]string, len(c.n.cfg.Roles))
	for i, r := range c.n.cfg.Roles {
		roles[i] = string(r)
	}
	return gossip.Meta{
		ID: c.n.self.ID, Incarnation: c.n.self.Incarnation, Roles: roles,
		RPCAddr: c.server.Addr(), PublicURL: publicURL, Version: c.n.cfg.Version, State: state,
	}
}

// run applies membership events until gossip shuts down.
func (c *cluster) run() {
	defer close(c.done)
	for ev := range c.gossip.Events() {
		c.apply(ev)
	}
}

func (c *cluster) apply(ev gossip.Event) {
	m := ev.Member
	c.mu.Lock()
	cur, known := c.members[m.ID]
	switch ev.Type {
	case gossip.Join, gossip.Update:
		c.members[m.ID] = m // a restarted node's new incarnation replaces the old one
		delete(c.departing, m.ID)
		delete(c.gone, m.ID+"/"+m.Incarnation)
		if known && cur.Incarnation != m.Incarnation {
			c.retireLocked(cur)
			c.goneLocked(cur)
		}
	case gossip.Leave:
		if known && cur.Incarnation == m.Incarnation {
			delete(c.members, m.ID)
			if m.HasRole(string(RolePush)) && m.ID != c.n.self.ID {
				c.departing[m.ID] = m
			}
		}
		c.retireLocked(m)
		c.goneLocked(m)
	}
	pushIDs := c.routableLocked()
	c.mu.Unlock()
	c.watch(ev.Type, m)
	if ev.Type != gossip.Leave && c.n.dispatch.send != nil {
		c.n.dispatch.send.Known(m.ID)
	}
	if err := c.ring.Set(pushIDs); err != nil {
		c.n.log.Error("ring update failed; keeping the previous ring", "err", err)
	}
	c.n.log.Debug("membership", "event", ev.Type.String(), "member", m.ID, "incarnation", m.Incarnation, "push_nodes", len(pushIDs))
}

// watch tells the cursor keepers about a member: a push node follows the
// cursors of dispatch nodes, a dispatch node those of collect-only nodes.
func (c *cluster) watch(t gossip.EventType, m gossip.Member) {
	if m.ID == c.n.self.ID {
		return
	}
	isDispatch := m.HasRole(string(RoleDispatch))
	collectOnly := m.HasRole(string(RoleCollect)) && !isDispatch
	switch {
	case isDispatch && c.n.sources != nil:
		if t == gossip.Leave {
			c.n.sources.forget(m.ID, m.Incarnation)
		} else {
			c.n.sources.learn(m.ID, m.Incarnation)
		}
	case collectOnly && c.n.cfg.Has(RoleDispatch) && t != gossip.Leave:
		c.n.tracker.HoldUpstream(m.ID + "/" + m.Incarnation)
	}
}

// goneLocked starts watching the lease of a collect-only node that left:
// this dispatch node holds its cursor to it until it is surely dead.
func (c *cluster) goneLocked(m gossip.Member) {
	if m.HasRole(string(RoleCollect)) && !m.HasRole(string(RoleDispatch)) && c.n.cfg.Has(RoleDispatch) {
		c.gone[m.ID+"/"+m.Incarnation] = goneMember{m: m}
	}
}

// checkUpstream runs every second on a dispatch node: a collect-only node
// that left, and whose lease has been dead for AppendGrace, can hand over
// nothing any more. Its cursor is dropped, and every push node recovers
// everything (the node may have died holding accepted messages it never
// handed over; they are in the store).
func (c *cluster) checkUpstream(ctx context.Context) {
	c.mu.Lock()
	gone := make(map[string]goneMember, len(c.gone))
	for k, g := range c.gone {
		gone[k] = g
	}
	c.mu.Unlock()
	now := time.Now()
	for k, g := range gone {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		holder, err := c.n.cfg.Bindings.LeaseHolder(lctx, g.m.ID)
		cancel()
		if err != nil {
			continue
		}
		c.mu.Lock()
		cur, still := c.gone[k]
		switch {
		case !still:
		case holder == g.m.Incarnation:
			cur.leaseDeadSince = time.Time{}
			c.gone[k] = cur
		case cur.leaseDeadSince.IsZero():
			cur.leaseDeadSince = now
			c.gone[k] = cur
		case now.Sub(cur.leaseDeadSince) >= c.n.cfg.AppendGrace:
			delete(c.gone, k)
			c.mu.Unlock()
			c.n.log.Warn("a collect node died; push nodes recover what it may not have handed over", "node", k)
			c.n.tracker.DropUpstream(k)
			if s := c.n.dispatch.send; s != nil {
				s.DropAll(c.PushNodes())
			}
			continue
		}
		c.mu.Unlock()
	}
}

// retireLocked forgets an incarnation that left or was replaced, after
// DepartGrace: then its RPC peer is closed and, if this node is the
// designated survivor, its bindings are purged so nobody waits for its
// lease to expire. A node that gossip declared dead by mistake (it was
// only slow to answer probes, and refuted) is back by then: it keeps its
// peer, so deliveries queued for it still go out, and its users stay
// bound, so messages keep finding them.
func (c *cluster) retireLocked(m gossip.Member) {
	if m.ID == c.n.self.ID && m.Incarnation == c.n.self.Incarnation {
		return
	}
	c.n.bg.Add(1)
	go func() {
		defer c.n.bg.Done()
		if g := c.n.cfg.DepartGrace; g > 0 {
			t := time.NewTimer(g)
			select {
			case <-t.C:
			case <-c.n.stop:
				t.Stop()
				return
			}
		}
		c.retire(m)
	}()
}

// retire does what retireLocked deferred, unless m is a member again.
func (c *cluster) retire(m gossip.Member) {
	c.mu.Lock()
	if d, ok := c.departing[m.ID]; ok && d.Incarnation == m.Incarnation {
		delete(c.departing, m.ID)
	}
	cur, ok := c.members[m.ID]
	if ok && cur.Incarnation == m.Incarnation {
		c.mu.Unlock()
		c.n.metrics.departRefuted.Inc()
		c.n.log.Info("a departed node came back within the grace period; keeping its bindings", "node", m.ID, "incarnation", m.Incarnation)
		return
	}
	removePeer := m.RPCAddr != "" && (!ok || cur.RPCAddr != m.RPCAddr)
	purge := m.HasRole(string(RolePush)) && c.n.cfg.Bindings != nil && c.survivorLocked()
	c.mu.Unlock()
	if removePeer {
		c.rpc.Remove(m.RPCAddr)
	}
	if !purge {
		return
	}
	dead := storage.Node{ID: m.ID, Incarnation: m.Incarnation}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	removed, err := c.n.cfg.Bindings.Purge(ctx, dead)
	if err != nil {
		c.n.log.Warn("purging a departed node's bindings failed; they expire with its lease", "node", dead.String(), "err", err)
		return
	}
	c.n.log.Info("purged a departed node's bindings", "node", dead.String(), "bindings", removed)
}

// survivorLocked reports whether this node is the one that cleans up after
// departed nodes: the live node with a binding store and the lowest ID.
func (c *cluster) survivorLocked() bool {
	for id, m := range c.members {
		if id < c.n.self.ID && (m.HasRole(string(RolePush)) || m.HasRole(string(RoleDispatch))) {
			return false
		}
	}
	return true
}

// routableLocked lists the live push nodes, which new clients may be
// steered to. (A draining node leaves gossip first, so it is not one.)
func (c *cluster) routableLocked() []string {
	var ids []string
	for id, m := range c.members {
		if m.HasRole(string(RolePush)) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// PushNodes implements membership: the live push nodes' IDs, sorted.
func (c *cluster) PushNodes() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.routableLocked()
}

// Departing implements membership.
func (c *cluster) Departing() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := make([]string, 0, len(c.departing))
	for id := range c.departing {
		if _, back := c.members[id]; !back {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// IsPush implements membership.
func (c *cluster) IsPush(id string) (push, known bool) {
	m, ok := c.member(id)
	return ok && m.HasRole(string(RolePush)), ok
}

// Owner implements membership.
func (c *cluster) Owner(user string) (string, bool) {
	return c.ring.Snapshot().Owner(user)
}

// rpcAddr returns the RPC address of live member id.
func (c *cluster) rpcAddr(id string) (string, bool) {
	m, ok := c.member(id)
	if !ok || m.RPCAddr == "" {
		return "", false
	}
	return m.RPCAddr, true
}

// member returns the live member with id.
func (c *cluster) member(id string) (gossip.Member, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.members[id]
	return m, ok
}

// withRole returns the live members with role, sorted by ID.
func (c *cluster) withRole(r Role) []gossip.Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []gossip.Member
	for _, m := range c.members {
		if m.HasRole(string(r)) {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b gossip.Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// all returns every live member, sorted by ID.
func (c *cluster) all() []gossip.Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]gossip.Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// owner returns the ring owner of user among routable push nodes.
func (c *cluster) owner(user string) (gossip.Member, bool) {
	id, ok := c.ring.Snapshot().Owner(user)
	if !ok {
		return gossip.Member{}, false
	}
	return c.member(id)
}

// ownerWithout returns user's ring owner once node id has left.
func (c *cluster) ownerWithout(user, id string) (gossip.Member, bool) {
	s, err := c.ring.Snapshot().Without(id)
	if err != nil {
		return gossip.Member{}, false
	}
	owner, ok := s.Owner(user)
	if !ok {
		return gossip.Member{}, false
	}
	return c.member(owner)
}

// endSessions ends this node's delivery sessions with every live push
// node, once each has acked all it was sent (a peer for a node that is
// gone is left alone: it holds nothing for it any more).
func (c *cluster) endSessions(ctx context.Context) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, m := range c.withRole(RolePush) {
		if m.ID == c.n.self.ID || m.RPCAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.rpc.Peer(m.RPCAddr).End(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", m.ID, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// leave says goodbye to the cluster.
func (c *cluster) leave(ctx context.Context) error {
	return c.gossip.Leave(ctx)
}

// kill stops RPC and gossip without a goodbye, as a crash would.
func (c *cluster) kill() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace: stop at once
	_ = c.server.Shutdown(ctx)
	_ = c.rpc.Close(ctx)
	if c.gossip != nil {
		_ = c.gossip.Shutdown(ctx) // without Leave: the others detect a failure
		<-c.done
	}
}

// shutdown stops RPC and gossip and waits for the event loop.
func (c *cluster) shutdown(ctx context.Context) error {
	var errs []error
	if err := c.rpc.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("rpc client: %w", err))
	}
	if err := c.server.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("rpc server: %w", err))
	}
	if c.gossip != nil {
		if err := c.gossip.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("gossip: %w", err))
		}
		<-c.done
	}
	return errors.Join(errs...)
}
