package node

import (
	"sync"
	"time"

	"github.com/heraldpush/herald/node/rpc"
)

// peerSender sends deliveries and cursors to push nodes by node ID, over
// RPC. It never waits: a slow, stuck or dead node delays its own
// deliveries only (its RPC peer buffers them, and drops them into a gap
// past its bounds). Deliveries for a node that gossip has not announced
// yet (it just joined: its clients bound before its gossip reached this
// node) wait up to deferTimeout, in order, and go when it is announced;
// past that, or past maxDeferred, they are dropped into a gap that the
// node's first session reports, so it recovers them from the store.
//
// Send and Cursor are called from the dispatcher's goroutine, Known and
// Expire from any; all are safe for concurrent use.
type peerSender struct {
	rpc          *rpc.Client
	addr         func(id string) (rpcAddr string, ok bool) // a live member's RPC address
	deferTimeout time.Duration
	maxDeferred  int

	// onDefer and onDrop count deliveries deferred and dropped, if set.
	onDefer func()
	onDrop  func(n int)

	mu       sync.Mutex
	deferred map[string]*deferredPeer
	count    int
}

type deferredPeer struct {
	ds       []deferredDelivery
	gapUsers []string
	gapAll   bool
	since    time.Time // when the node was first waited for
}

type deferredDelivery struct {
	d     rpc.Delivery
	until time.Time
}

func newPeerSender(c *rpc.Client, addr func(string) (string, bool), deferTimeout time.Duration, maxDeferred int) *peerSender {
	return &peerSender{rpc: c, addr: addr, deferTimeout: deferTimeout, maxDeferred: maxDeferred,
		deferred: make(map[string]*deferredPeer)}
}

// Send queues d for node id.
func (s *peerSender) Send(id string, d rpc.Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dp := s.deferred[id]; dp == nil {
		if addr, ok := s.addr(id); ok {
			_ = s.rpc.Peer(addr).Enqueue(d) // fails only once the client is closed
			return
		}
	}
	dp := s.deferred[id]
	if dp == nil {
		dp = &deferredPeer{since: time.Now()}
		s.deferred[id] = dp
	}
	if s.count >= s.maxDeferred {
		s.dropLocked(dp, []rpc.Delivery{d})
		return
	}
	dp.ds = append(dp.ds, deferredDelivery{d, time.Now().Add(s.deferTimeout)})
	s.count++
	if s.onDefer != nil {
		s.onDefer()
	}
}

// dropLocked records that ds were dropped for dp's node.
func (s *peerSender) dropLocked(dp *deferredPeer, ds []rpc.Delivery) {
	for _, d := range ds {
		if d.Message.Broadcast {
			dp.gapAll = true
		}
		if !dp.gapAll {
			dp.gapUsers = append(dp.gapUsers, d.Message.To...)
			if len(dp.gapUsers) > 1000 {
				dp.gapAll, dp.gapUsers = true, nil
			}
		}
	}
	if s.onDrop != nil {
		s.onDrop(len(ds))
	}
}

// Cursor sends cursor c to every node in ids that is known.
func (s *peerSender) Cursor(c string, ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.deferred[id] != nil {
			continue // it gets its cursor once it is known and its deliveries went
		}
		if addr, ok := s.addr(id); ok {
			s.rpc.Peer(addr).Cursor(c)
		}
	}
}

// Known sends what waited for node id, now that gossip announced it.
func (s *peerSender) Known(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dp := s.deferred[id]
	if dp == nil {
		return
	}
	addr, ok := s.addr(id)
	if !ok {
		return
	}
	delete(s.deferred, id)
	s.count -= len(dp.ds)
	p := s.rpc.Peer(addr)
	if dp.gapAll || len(dp.gapUsers) > 0 {
		p.Drop(dp.gapUsers, dp.gapAll)
	}
	now := time.Now()
	var late []rpc.Delivery
	for _, x := range dp.ds {
		if now.Before(x.until) {
			_ = p.Enqueue(x.d)
		} else {
			late = append(late, x.d)
		}
	}
	if len(late) > 0 {
		// Too late to send: the node recovers them (a second gap).
		gap := &deferredPeer{}
		s.dropLocked(gap, late)
		p.Drop(gap.gapUsers, gap.gapAll)
	}
}

// Expire drops the deferred deliveries that waited too long into their
// node's gap, and forgets nodes that have waited for an hour (they are
// not coming).
func (s *peerSender) Expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, dp := range s.deferred {
		keep := dp.ds[:0]
		var late []rpc.Delivery
		for _, x := range dp.ds {
			if now.Before(x.until) {
				keep = append(keep, x)
			} else {
				late = append(late, x.d)
			}
		}
		clear(dp.ds[len(keep):])
		dp.ds = keep
		s.count -= len(late)
		if len(late) > 0 {
			s.dropLocked(dp, late)
		}
		if len(dp.ds) == 0 && now.Sub(dp.since) > time.Hour {
			delete(s.deferred, id)
		}
	}
}

// DropAll makes every node in ids recover every user: a collect-only node
// died with messages it may never have handed to a dispatch node.
func (s *peerSender) DropAll(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if dp := s.deferred[id]; dp != nil {
			dp.gapAll, dp.gapUsers = true, nil
			continue
		}
		if addr, ok := s.addr(id); ok {
			s.rpc.Peer(addr).Drop(nil, true)
		}
	}
}

// Deferred returns how many deliveries wait for unknown nodes.
func (s *peerSender) Deferred() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}
