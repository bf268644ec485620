package node_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/gossip"
	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/nodetest"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/storagetest"
)

// The paths where delivery used to give up on a connected client, each
// forced, and what now happens instead (docs/DECISIONS.md, "No give-up
// path"). Every test checks that each accepted message reached the
// client, and that the path was taken.

// metricSum is the sum of a metric's samples on n, whatever their labels.
func metricSum(t *testing.T, n *nodetest.Node, name string) float64 {
	t.Helper()
	sum := 0.0
	for _, line := range strings.Split(n.Get("/metrics").Body, "\n") {
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// waitMetric waits until n's metric reaches at least want.
func waitMetric(t *testing.T, n *nodetest.Node, name string, want float64) {
	t.Helper()
	storagetest.Eventually(t, 20*time.Second, func() error {
		if v := metricSum(t, n, name); v < want {
			return fmt.Errorf("%s on %s is %v, want at least %v", name, n.ID().ID, v, want)
		}
		return nil
	})
}

// A full dispatch queue makes the POST wait instead of skipping the live
// delivery.
func TestGiveUpIntakeFullWaits(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t, nodetest.Options{Config: func(c *node.Config) { c.DispatchQueue = 1 }})
	alice, _ := n.Connect("alice", "")
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := n.Send(fmt.Sprint(w, "-", i), "alice")
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	got := map[string]bool{}
	for len(got) < len(ids) {
		got[alice.Message().ID] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("%s never arrived", id)
		}
	}
	if v := metricSum(t, n, "herald_dispatch_queue_full_total"); v == 0 {
		t.Fatal("the dispatch queue never filled: the test did not force the path")
	}
}

// twoNodes starts a converged cluster of two all-role nodes; a's internal
// RPC connections go through fault, which can cut it off from b.
func twoNodes(t *testing.T, fault *nodetest.FaultNet, cfg func(*node.Config)) (*nodetest.Cluster, *nodetest.Node, *nodetest.Node) {
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{})
	a := c.AddNode(nodetest.NodeOptions{Config: func(cc *node.Config) {
		cc.RPC.Dialer = fault.Dial
		if cfg != nil {
			cfg(cc)
		}
	}})
	b := c.AddNode(nodetest.NodeOptions{Config: cfg})
	c.Converge()
	return c, a, b
}

// sendN posts n messages for user through from and returns their IDs.
func sendN(t *testing.T, from *nodetest.Node, user string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, from.Send(i, user))
	}
	return ids
}

// A push node that another cannot reach for a while, while messages for
// its users pile up there beyond the sender's bound, gets them anyway: the
// sender drops them into a gap, its next session says which users, and
// the push node's clients resync in place, without reconnecting.
func TestGiveUpPeerOverflowResyncs(t *testing.T) {
	exclusive(t)
	fault := nodetest.NewFaultNet()
	c, a, b := twoNodes(t, fault, func(cfg *node.Config) {
		cfg.RPC.QueueLen = 5
		cfg.RPC.AckTimeout = 300 * time.Millisecond
	})
	user := c.Owned(a, b.ID().ID, "overflow-")
	f := c.FollowOn(user, b)
	f.Ready(1)
	fault.Block(b.RPCAddr())
	ids := sendN(t, a, user, 30)
	waitMetric(t, a, "herald_rpc_deliveries_dropped_total", 1)
	fault.Unblock(b.RPCAddr())
	if err := f.WaitAll(ids, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.Connects() != 1 || f.Resyncs() == 0 {
		t.Fatalf("connects %d, resyncs %d: want the client recovered in place", f.Connects(), f.Resyncs())
	}
}

// A batch whose ack is late (the peer froze, the network stalled) is sent
// again once the peer answers, and delivered once.
func TestGiveUpAckTimeoutResends(t *testing.T) {
	exclusive(t)
	fault := nodetest.NewFaultNet()
	c, a, b := twoNodes(t, fault, func(cfg *node.Config) { cfg.RPC.AckTimeout = 300 * time.Millisecond })
	user := c.Owned(a, b.ID().ID, "stall-")
	f := c.FollowOn(user, b)
	f.Ready(1)
	// A first message opens the stream; then the network stalls.
	ids := sendN(t, a, user, 1)
	if err := f.WaitAll(ids, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	fault.Block(b.RPCAddr())
	ids = append(ids, sendN(t, a, user, 10)...)
	// The stream is cut for the late ack; reconnecting fails meanwhile.
	waitMetric(t, a, "herald_rpc_ack_timeouts_total", 1)
	fault.Unblock(b.RPCAddr())
	if err := f.WaitAll(ids, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.Duplicates() != 0 || f.Resyncs() != 0 || f.Connects() != 1 {
		t.Fatalf("duplicates %d, resyncs %d, connects %d: want each delivered once, by the retry", f.Duplicates(), f.Resyncs(), f.Connects())
	}
}

// Deliveries for a node gossip does not know (yet) wait; past DeferTimeout
// they are dropped into a gap the node's first session reports.
func TestGiveUpDeferredTooLongResyncs(t *testing.T) {
	exclusive(t)
	fault := nodetest.NewFaultNet()
	c, a, b := twoNodes(t, fault, func(cfg *node.Config) {
		cfg.DeferTimeout = 200 * time.Millisecond
		cfg.DepartGrace = time.Minute // no purge, no removal: only the deferral
	})
	user := c.Owned(a, b.ID().ID, "deferred-")
	f := c.FollowOn(user, b)
	f.Ready(1)
	m, ok := a.GossipMember(b.ID().ID)
	if !ok {
		t.Fatal("a does not know b")
	}
	a.ApplyGossip(gossip.Event{Type: gossip.Leave, Member: m})
	ids := sendN(t, a, user, 5)
	waitMetric(t, a, "herald_dispatch_deferred_dropped_total", 5)
	a.ApplyGossip(gossip.Event{Type: gossip.Join, Member: m})
	if err := f.WaitAll(ids, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.Connects() != 1 || f.Resyncs() == 0 {
		t.Fatalf("connects %d, resyncs %d: want the client recovered in place", f.Connects(), f.Resyncs())
	}
}

// Broadcasts posted while gossip has lost a push node (it is only cut
// off, or slow) still reach its clients: the node is departing, not gone,
// so they wait for it like deliveries for an unknown node, and go into a
// gap its next session reports. The chaos drill found broadcasts skipped
// for a partitioned node, silently, and its clients' cursors passing them.
func TestGiveUpBroadcastToDepartingNode(t *testing.T) {
	exclusive(t)
	fault := nodetest.NewFaultNet()
	c, a, b := twoNodes(t, fault, func(cfg *node.Config) {
		cfg.DeferTimeout = 200 * time.Millisecond
		cfg.DepartGrace = time.Minute // no purge, no removal: only the departure
	})
	user := c.Owned(a, b.ID().ID, "bcast-")
	f := c.FollowOn(user, b)
	f.Ready(1)
	m, ok := a.GossipMember(b.ID().ID)
	if !ok {
		t.Fatal("a does not know b")
	}
	a.ApplyGossip(gossip.Event{Type: gossip.Leave, Member: m})
	var ids []string
	for i := range 3 {
		r := a.Post(fmt.Sprintf(`{"broadcast":true,"data":%d}`, i))
		if r.ID == "" {
			t.Fatalf("broadcast: %d %s", r.Status, r.Body)
		}
		ids = append(ids, r.ID)
	}
	waitMetric(t, a, "herald_dispatch_deferred_dropped_total", 3)
	a.ApplyGossip(gossip.Event{Type: gossip.Join, Member: m})
	if err := f.WaitAll(ids, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.Connects() != 1 || f.Resyncs() == 0 {
		t.Fatalf("connects %d, resyncs %d: want the client recovered in place", f.Connects(), f.Resyncs())
	}
}

// A collect-only node offers a batch again until some dispatch node takes
// it.
func TestGiveUpHandOffRetries(t *testing.T) {
	exclusive(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{})
	short := func(cfg *node.Config) { cfg.AppendTimeout, cfg.AppendGrace = time.Second, time.Second }
	collect := c.AddNode(nodetest.NodeOptions{ID: "collect-1", Roles: []node.Role{node.RoleCollect}, Config: short})
	d1 := c.AddNode(nodetest.NodeOptions{ID: "dispatch-1", Roles: []node.Role{node.RoleDispatch}, Config: short})
	push := c.AddNode(nodetest.NodeOptions{ID: "push-1", Roles: []node.Role{node.RolePush, node.RoleAuth}, Config: short})
	c.Converge()
	f := c.FollowOn("handoff-user", push)
	f.Ready(1)
	first := collect.Send("before", "handoff-user")
	if err := f.WaitAll([]string{first}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Kill(d1)
	c.Converge()
	id := collect.Send("no dispatch node", "handoff-user")
	waitMetric(t, collect, "herald_dispatch_handoff_retries_total", 1)
	c.AddNode(nodetest.NodeOptions{ID: "dispatch-2", Roles: []node.Role{node.RoleDispatch}, Config: short})
	if err := f.WaitAll([]string{id}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// flakyStore loses the outcome of appends whose data says so: "lost-ack"
// is written and reported unavailable; "lost-write" is not written.
type flakyStore struct {
	storage.Messages
}

func (s flakyStore) Append(ctx context.Context, m *storage.Message) (*storage.Message, error) {
	switch string(m.Data) {
	case `"lost-ack"`:
		if got, err := s.Messages.Append(ctx, m); err != nil {
			return got, err
		}
		return nil, fmt.Errorf("write concern timed out: %w", storage.ErrUnavailable)
	case `"lost-write"`:
		return nil, fmt.Errorf("no primary: %w", storage.ErrUnavailable)
	}
	return s.Messages.Append(ctx, m)
}

// A POST whose store write timed out gets 503, yet the store may have the
// message: it is settled with the store, dispatched if stored, and fenced
// if not (a retry with the key is then a new message).
func TestGiveUpStoreTimeoutResolved(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		o.Config = func(c *node.Config) { c.Messages = flakyStore{c.Messages} }
		n := nodetest.Start(t, o)
		alice, _ := n.Connect("alice", "")
		r := n.Post(map[string]any{"to": []string{"alice"}, "data": "lost-ack", "key": "k-ack"})
		if r.Status != 503 {
			t.Fatalf("lost ack: %d %s", r.Status, r.Body)
		}
		// Stored after all: it arrives; a retry with the key is its duplicate.
		got := alice.Message()
		if string(got.Data) != `"lost-ack"` {
			t.Fatalf("got %+v", got)
		}
		if retry := n.Post(map[string]any{"to": []string{"alice"}, "data": "lost-ack", "key": "k-ack"}); retry.Status != 202 || !retry.Duplicate || retry.ID != got.ID {
			t.Fatalf("retry of the lost ack: %+v, want a duplicate of %s", retry, got.ID)
		}
		r = n.Post(map[string]any{"to": []string{"alice"}, "data": "lost-write", "key": "k-write"})
		if r.Status != 503 {
			t.Fatalf("lost write: %d %s", r.Status, r.Body)
		}
		retry := n.Post(map[string]any{"to": []string{"alice"}, "data": "fine", "key": "k-write"})
		if retry.Status != 202 || retry.Duplicate {
			t.Fatalf("retry of the lost write: %+v, want a new message", retry)
		}
		expectDistinct(t, n, alice, got.ID, retry.ID)
		storagetest.Eventually(t, 10*time.Second, func() error {
			if v := metricSum(t, n, "herald_store_resolved_appends_total"); v < 2 {
				return fmt.Errorf("%v appends settled, want 2", v)
			}
			return nil
		})
	})
}

// A dispatch node that dies holding deliveries for another node (here cut
// off from it) makes that node's clients recover them from the store,
// once the dead node's lease shows it is gone.
func TestGiveUpDeadDispatchNodeResyncs(t *testing.T) {
	exclusive(t)
	fault := nodetest.NewFaultNet()
	c, a, b := twoNodes(t, fault, func(cfg *node.Config) { cfg.AppendTimeout, cfg.AppendGrace = time.Second, time.Second })
	user := c.Owned(a, b.ID().ID, "orphan-")
	f := c.FollowOn(user, b)
	f.Ready(1)
	fault.Block(b.RPCAddr())
	ids := sendN(t, a, user, 5)
	c.Kill(a)
	if err := f.WaitAll(ids, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.Connects() != 1 || f.Resyncs() == 0 {
		t.Fatalf("connects %d, resyncs %d: want the client recovered in place", f.Connects(), f.Resyncs())
	}
}

// When the binding store loses every binding (a Redis restarted empty),
// a client that is not on its ring owner misses live messages until its
// node notices (its lease renewal), binds it again, and resyncs it.
func TestGiveUpBindingsLostResyncs(t *testing.T) {
	exclusive(t)
	rt := nodetest.OwnRedis(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{Redis: rt})
	a := c.AddNode(nodetest.NodeOptions{})
	b := c.AddNode(nodetest.NodeOptions{})
	c.Converge()
	user := c.Owned(a, a.ID().ID, "lost-binding-") // owned by a, connected to b
	f := c.FollowOn(user, b)
	f.Ready(1)
	if err := rt.Server.FlushAll(); err != nil {
		t.Fatal(err)
	}
	ids := sendN(t, a, user, 5)
	if err := f.WaitAll(ids, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if f.Connects() != 1 {
		t.Fatalf("connects %d: want the client recovered in place", f.Connects())
	}
	waitMetric(t, b, "herald_binding_lease_lost_total", 1)
}

// While the binding store is down, a connected client not on its ring
// owner still gets live messages: every push node gets every recipient.
func TestGiveUpBindingStoreDownFansOut(t *testing.T) {
	exclusive(t)
	rt := nodetest.OwnRedis(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{Redis: rt})
	a := c.AddNode(nodetest.NodeOptions{})
	b := c.AddNode(nodetest.NodeOptions{})
	c.Converge()
	user := c.Owned(a, a.ID().ID, "fanout-")
	f := c.FollowOn(user, b)
	f.Ready(1)
	rt.Server.Stop()
	ids := sendN(t, a, user, 5)
	if err := f.WaitAll(ids, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if v := metricSum(t, a, "herald_dispatch_lookup_errors_total"); v == 0 {
		t.Fatal("no lookup failed: the test did not force the path")
	}
	rt.Server.Start()
	after := a.Send("after", user)
	if err := f.WaitAll([]string{after}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// A failed Start stops what it started: here the internal RPC port is
// taken, after the public listener is up. (TestMain checks that no
// goroutine is left.)
func TestStartFailureUnwinds(t *testing.T) {
	t.Parallel()
	first := nodetest.Start(t, nodetest.Options{})
	// The RPC port is taken: gossip has not started yet.
	n := nodetest.New(t, nodetest.Options{Config: func(cfg *node.Config) { cfg.RPCAddr = first.RPCAddr() }})
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start with a taken RPC port: %v", err)
	}
	// The lease cannot be taken (the binding store is closed): RPC and
	// gossip are up by then, and must be stopped again.
	m := nodetest.New(t, nodetest.Options{Config: func(cfg *node.Config) { _ = cfg.Bindings.Close() }})
	if err := m.Start(context.Background()); err == nil || !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Start with a closed binding store: %v", err)
	}
	for _, x := range []*nodetest.Node{n, m} {
		if err := x.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown after a failed Start: %v", err)
		}
	}
}
