package node

import (
	"context"
	"slices"
	"time"

	"github.com/heraldpush/herald/storage"
)

// membership is what routing needs to know of the cluster: which push
// nodes are live, and where each user belongs on the ring. The cluster
// implements it; tests use a fixed one. Safe for concurrent use.
type membership interface {
	// PushNodes returns the IDs of the live push nodes, sorted.
	PushNodes() []string
	// Departing returns the IDs of push nodes gossip lost within the
	// departure grace (DepartGrace), sorted: they may be only slow or cut
	// off, and come back with their connections. What must reach every
	// push node (a broadcast, a fan-out) goes to them too, and waits for
	// them as for a node not announced yet, so that one that comes back
	// gets it, or recovers it from the store. (After the grace their RPC
	// sessions are closed, and one that comes back recovers everything.)
	Departing() []string
	// IsPush reports whether node id is a live push node; known is false
	// when gossip has not announced it (yet).
	IsPush(id string) (push, known bool)
	// Owner returns user's ring owner among the live push nodes.
	Owner(user string) (string, bool)
}

// everyPushNode lists the push nodes that must get what goes to all: the
// live ones and the departing ones.
func everyPushNode(m membership) []string {
	ids := m.PushNodes()
	for _, id := range m.Departing() {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// locator finds the push nodes of a batch's recipients.
//
// The rules (docs/CLUSTER.md, "Routing"):
//   - the binding store is the truth: a user goes to every node that binds
//     it, this node excepted (local connections need no lookup); a node
//     gossip has not announced yet is kept (the sender holds its
//     deliveries until it is);
//   - a user with no binding goes to its ring owner, where clients are
//     steered, marked guessed: bindings can lag behind a connect, and the
//     owner delivers if it holds the user (a miss there is not looked up
//     again);
//   - when the binding store cannot answer, every push node (live or
//     departing) gets every recipient, guessed: only a node that holds a
//     user delivers.
type locator struct {
	self     string
	bindings storage.Bindings
	members  membership
	timeout  time.Duration

	// onLookupError and onGuess count what happened, if set.
	onLookupError func(error)
	onGuess       func(n int)
}

// route says where recipients are.
type route struct {
	nodes   map[string][]string // user -> nodes
	guessed map[string]bool     // user -> its nodes are a guess
	fanout  []string            // the binding store failed: every recipient goes to these nodes, guessed
}

// hop is one delivery to make: users on a node, and whether they were
// guessed (a guessed delivery is not looked up again on a miss).
type hop struct {
	node    string
	guessed bool
}

// locate resolves users (distinct, not empty).
func (l *locator) locate(users []string) route {
	r := route{nodes: make(map[string][]string, len(users)), guessed: make(map[string]bool)}
	if len(users) == 0 {
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	bound, err := l.bindings.Lookup(ctx, users)
	cancel()
	if err != nil {
		if l.onLookupError != nil {
			l.onLookupError(err)
		}
		for _, id := range everyPushNode(l.members) {
			if id != l.self {
				r.fanout = append(r.fanout, id)
			}
		}
		return r
	}
	guesses := 0
	for _, u := range users {
		nodes, ok := bound[u]
		if !ok {
			if owner, ok := l.members.Owner(u); ok && owner != l.self {
				r.nodes[u] = []string{owner}
				r.guessed[u] = true
				guesses++
			}
			continue
		}
		for _, id := range nodes {
			if id == l.self {
				continue
			}
			if push, known := l.members.IsPush(id); push || !known {
				r.nodes[u] = append(r.nodes[u], id)
			}
		}
	}
	if guesses > 0 && l.onGuess != nil {
		l.onGuess(guesses)
	}
	return r
}

// locateBound resolves users by their bindings alone (no ring guess, no
// fan-out): for a push node that found none of a delivery's recipients
// and looks once more where they went.
func (l *locator) locateBound(users []string) route {
	r := route{nodes: make(map[string][]string, len(users)), guessed: make(map[string]bool)}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	bound, err := l.bindings.Lookup(ctx, users)
	cancel()
	if err != nil {
		if l.onLookupError != nil {
			l.onLookupError(err)
		}
		return r
	}
	for _, u := range users {
		for _, id := range bound[u] {
			if id == l.self {
				continue
			}
			if push, known := l.members.IsPush(id); push || !known {
				r.nodes[u] = append(r.nodes[u], id)
			}
		}
	}
	return r
}

// split groups recipients by destination node and guessing, in a stable
// order (destinations sorted).
func (r route) split(to []string) []routedHop {
	out := make(map[hop][]string)
	if r.fanout != nil {
		for _, n := range r.fanout {
			out[hop{n, true}] = to
		}
	} else {
		for _, u := range to {
			for _, node := range r.nodes[u] {
				h := hop{node, r.guessed[u]}
				out[h] = append(out[h], u)
			}
		}
	}
	hops := make([]routedHop, 0, len(out))
	for h, users := range out {
		hops = append(hops, routedHop{hop: h, users: users})
	}
	slices.SortFunc(hops, func(a, b routedHop) int {
		switch {
		case a.node != b.node:
			if a.node < b.node {
				return -1
			}
			return 1
		case a.guessed == b.guessed:
			return 0
		case !a.guessed:
			return -1
		}
		return 1
	})
	return hops
}

type routedHop struct {
	hop
	users []string
}
