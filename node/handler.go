package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
)

// rpcHandler serves the node's internal RPC.
type rpcHandler struct{ n *Node }

// Deliver delivers a batch another node routed here: first what its
// session says about deliveries it dropped, then the deliveries, then its
// cursor. A recipient with no connection here is looked up again once and
// forwarded to where it is now (hops 0 only): a copy, in case it moved.
func (h rpcHandler) Deliver(_ context.Context, b rpc.Batch) error {
	n := h.n
	if n.edge == nil {
		return errors.New("this node has no push role")
	}
	n.sources.beginBatch(&b)
	for _, dl := range b.Deliveries {
		m := dl.Message
		f := edge.EncodeMessage(m.ID, m.Data, m.CreatedAt, n.sources.Cursor())
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
		if len(missing) == 0 || dl.Hops > 0 || n.dispatch.send == nil {
			continue
		}
		n.metrics.misrouted.Add(float64(len(missing)))
		where := n.dispatch.locator.locateBound(missing)
		for _, hp := range where.split(missing) {
			mm := *m
			mm.To = hp.users
			n.dispatch.send.Send(hp.node, rpc.Delivery{Message: &mm, Hops: dl.Hops + 1})
		}
	}
	n.sources.endBatch(&b)
	return nil
}

// Submit takes stored messages, and the cursor, of a collect-only node.
// The messages stay open in this node's tracker until routed, and this
// node's cursor stays at or below the collect node's: so no push node's
// cursor passes a message before it is routed.
func (h rpcHandler) Submit(ctx context.Context, from rpc.Source, ms []*storage.Message, cursor string) error {
	n := h.n
	if !n.cfg.Has(RoleDispatch) {
		return errors.New("this node has no dispatch role")
	}
	key := from.ID + "/" + from.Incarnation
	for i, m := range ms {
		n.tracker.Adopt(m.ID)
		if err := n.dispatch.submit(ctx, m, true); err != nil {
			for _, rest := range ms[i:] {
				n.tracker.Done(rest.ID)
			}
			return fmt.Errorf("%w: %v", rpc.ErrUnavailable, err)
		}
	}
	if cursor != "" && from.ID != "" {
		n.tracker.SetUpstream(key, cursor)
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

// clusterSubmitter hands a collect-only node's messages to the cluster's
// dispatch nodes, round robin.
type clusterSubmitter struct {
	n    *Node
	next atomic.Uint64
}

func (s *clusterSubmitter) Submit(ctx context.Context, ms []*storage.Message) error {
	targets := s.n.cluster.withRole(RoleDispatch)
	if len(targets) == 0 {
		return errors.New("no dispatch node in the cluster")
	}
	start := int(s.next.Add(1))
	var errs []error
	for i := range targets {
		t := targets[(start+i)%len(targets)]
		// The cursor goes with the messages, computed before they are
		// handed over (they are open until Submit returns).
		err := s.n.cluster.rpc.Peer(t.RPCAddr).Submit(ctx, ms, s.n.tracker.Cursor())
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.ID, err))
	}
	return errors.Join(errs...)
}

// heartbeat sends this collect-only node's cursor to every dispatch node.
func (s *clusterSubmitter) heartbeat(ctx context.Context) {
	c := s.n.tracker.Cursor()
	for _, t := range s.n.cluster.withRole(RoleDispatch) {
		if t.ID == s.n.self.ID {
			continue
		}
		_ = s.n.cluster.rpc.Peer(t.RPCAddr).Submit(ctx, nil, c)
	}
}
