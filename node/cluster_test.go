package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/gossip"
	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/nodetest"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/embedded"
	"github.com/heraldpush/herald/storage/storagetest"
)

// clusterTests serializes the cluster tests: each runs several nodes and
// many clients against one in-process FerretDB, and two at once on a
// 2-core machine under -race make the store time out, which (correctly)
// answers 503 and fails tests that expect acceptance.
var clusterTests sync.Mutex

// exclusive runs the rest of a cluster test alone among cluster tests.
func exclusive(t *testing.T) {
	t.Parallel()
	clusterTests.Lock()
	t.Cleanup(clusterTests.Unlock)
}

// threeNodes starts a converged three-node cluster with every role.
func threeNodes(t *testing.T, opts ...func(*node.Config)) (*nodetest.Cluster, []*nodetest.Node) {
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{})
	cfg := func(cfg *node.Config) {
		for _, o := range opts {
			o(cfg)
		}
	}
	var ns []*nodetest.Node
	for range 3 {
		ns = append(ns, c.AddNode(nodetest.NodeOptions{Config: cfg}))
	}
	c.Converge()
	return c, ns
}

func TestClusterDeliversAcrossNodes(t *testing.T) {
	exclusive(t)
	_, ns := threeNodes(t)
	a, b, c := ns[0], ns[1], ns[2]
	// alice on C; POST to A.
	alice, _ := c.Connect("alice", "")
	id := a.Send("from A", "alice")
	if f := alice.Message(); f.ID != id {
		t.Fatalf("alice on C got %+v", f)
	}
	// bob on A and B (two devices); POST to C for both users.
	bob1, _ := a.Connect("bob", "")
	bob2, _ := b.Connect("bob", "")
	id2 := c.Send("to both", "alice", "bob")
	for _, cl := range []*nodetest.Client{alice, bob1, bob2} {
		if f := cl.Message(); f.ID != id2 {
			t.Fatalf("%s got %+v", cl.User, f)
		}
	}
	// Broadcast from B reaches every node.
	carol, _ := b.Connect("carol", "")
	r := b.Post(`{"broadcast":true,"data":"all"}`)
	for _, cl := range []*nodetest.Client{alice, bob1, bob2, carol} {
		if f := cl.Message(); f.ID != r.ID {
			t.Fatalf("%s got %+v, want the broadcast", cl.User, f)
		}
	}
	// Nothing was delivered twice: a sentinel to each comes next.
	for _, cl := range []*nodetest.Client{alice, bob1} {
		expectOnly(t, a, cl)
	}
	if r := a.Get("/v1/nodes"); r.Status != 200 || !containsAll(r.Body, ns) {
		t.Fatalf("nodes: %s", r.Body)
	}
}

func containsAll(body string, ns []*nodetest.Node) bool {
	for _, n := range ns {
		if !strings.Contains(body, `"id":"`+n.ID().ID+`"`) {
			return false
		}
	}
	return true
}

func TestRingMovesAboutOneNthOnJoinAndLeave(t *testing.T) {
	exclusive(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{})
	a := c.AddNode(nodetest.NodeOptions{})
	c.AddNode(nodetest.NodeOptions{})
	c.Converge()
	users := make([]string, 300)
	before := map[string]string{}
	for i := range users {
		users[i] = fmt.Sprint("ring-user-", i)
		before[users[i]], _ = c.Route(a, users[i])
	}
	third := c.AddNode(nodetest.NodeOptions{})
	c.Converge()
	moved, sideways := 0, 0
	for _, u := range users {
		owner, _ := c.Route(a, u)
		if owner != before[u] {
			moved++
			if owner != third.ID().ID {
				sideways++ // the ring's load bound moves a few between old nodes (ring/doc.go)
			}
		}
	}
	if moved < len(users)/6 || moved > len(users)/2 || sideways > len(users)/50 {
		t.Fatalf("%d of %d users moved (%d between the old nodes), want about a third, nearly all to the new node", moved, len(users), sideways)
	}
	// The third node leaves gracefully: its users go back where they were.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := third.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	third.Stop()
	c.Converge()
	for _, u := range users {
		if owner, _ := c.Route(a, u); owner != before[u] {
			t.Fatalf("after the leave %s is owned by %s, was %s", u, owner, before[u])
		}
	}
}

func TestRedisDownRoutesByRing(t *testing.T) {
	exclusive(t)
	rt := nodetest.OwnRedis(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{Redis: rt})
	var ns []*nodetest.Node
	for range 3 {
		ns = append(ns, c.AddNode(nodetest.NodeOptions{}))
	}
	c.Converge()
	// Steered clients: each connects to its ring owner.
	var followers []*nodetest.Follower
	for i := range 12 {
		f := c.Follow(fmt.Sprint("steered-", i))
		f.Ready(1)
		followers = append(followers, f)
	}
	rt.Server.Stop()
	var sent []string
	for i, f := range followers {
		sent = append(sent, ns[i%3].Send(i, f.User))
	}
	for i, f := range followers {
		if err := f.WaitAll([]string{sent[i]}, 10*time.Second); err != nil {
			t.Fatalf("with Redis down: %v", err)
		}
	}
	// Redis is back (empty): nothing accepted meanwhile is lost, and
	// messages after it still flow.
	rt.Server.Start()
	after := ns[0].Send("after", followers[5].User)
	if err := followers[5].WaitAll([]string{after}, 15*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestKilledNodeUsersReconnectAndReplay(t *testing.T) {
	exclusive(t)
	c, ns := threeNodes(t)
	victim := ns[1]
	var fs []*nodetest.Follower
	for i := range 9 {
		f := c.Follow(c.Owned(ns[0], victim.ID().ID, fmt.Sprintf("v%d-", i)))
		fs = append(fs, f)
	}
	for _, f := range fs {
		f.Ready(1)
		if f.Node() != victim.ID().ID {
			t.Fatalf("%s connected to %s, not its owner %s", f.User, f.Node(), victim.ID().ID)
		}
	}
	// Messages flow from the survivors while the victim dies.
	stop := make(chan struct{})
	var mu sync.Mutex
	sent := map[string][]string{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f := fs[i%len(fs)]
			r := ns[2*(i%2)].Post(map[string]any{"to": []string{f.User}, "data": i})
			if r.Status != 202 {
				t.Errorf("post: %d %s", r.Status, r.Body)
				return
			}
			mu.Lock()
			sent[f.User] = append(sent[f.User], r.ID)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // a steady rate, not a synchronisation
		}
	}()
	sentCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ids := range sent {
			n += len(ids)
		}
		return n
	}
	storagetest.Eventually(t, 10*time.Second, func() error {
		if n := sentCount(); n < 20 {
			return fmt.Errorf("%d messages sent", n)
		}
		return nil
	})
	c.Kill(victim)
	for _, f := range fs {
		f.Ready(2) // reconnected elsewhere
	}
	close(stop)
	wg.Wait()
	for _, f := range fs {
		if f.Node() == victim.ID().ID {
			t.Fatalf("%s still on the dead node", f.User)
		}
		mu.Lock()
		ids := sent[f.User]
		mu.Unlock()
		if err := f.WaitAll(ids, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// boundTo returns the nodes the binding store has user bound to.
func boundTo(t *testing.T, b storage.Bindings, user string) []string {
	t.Helper()
	got, err := b.Lookup(context.Background(), []string{user})
	if err != nil {
		t.Fatal(err)
	}
	return got[user]
}

func TestDeadNodeBindingsPurgedButNotItsSuccessors(t *testing.T) {
	exclusive(t)
	// A long lease: if the bindings go away quickly, the purge did it.
	c, ns := threeNodes(t, func(cfg *node.Config) { cfg.LeaseTTL = time.Minute })
	victim := ns[2]
	victim.Connect("purge-me", "")
	probe := c.Redis.Open(t)
	t.Cleanup(func() { probe.Close() })
	lookup := func() []string { return boundTo(t, probe, "purge-me") }
	if got := lookup(); !slices.Equal(got, []string{victim.ID().ID}) {
		t.Fatalf("bound to %v", got)
	}
	c.Kill(victim)
	storagetest.Eventually(t, 15*time.Second, func() error {
		if got := lookup(); len(got) != 0 {
			return fmt.Errorf("still bound to %v", got)
		}
		return nil
	})
	// The node comes back (same ID, new incarnation) and its user too; a
	// late purge of the old incarnation must not remove the new binding.
	back := c.AddNode(nodetest.NodeOptions{ID: victim.ID().ID})
	back.Connect("purge-me", "")
	if _, err := probe.Purge(context.Background(), victim.ID()); err != nil {
		t.Fatal(err)
	}
	if got := lookup(); !slices.Equal(got, []string{back.ID().ID}) {
		t.Fatalf("after the old incarnation's purge: bound to %v", got)
	}
}

// A node that gossip declares dead by mistake (it only missed probes: a
// long pause, a starved CPU) and that comes back within DepartGrace keeps
// its bindings and its RPC peers: messages sent meanwhile still reach its
// users. Before DepartGrace, the survivor purged a live node's bindings at
// once and such messages waited for the user's next reconnect.
func TestFalseDeathKeepsBindingsAndDeliveries(t *testing.T) {
	exclusive(t)
	c, ns := threeNodes(t, func(cfg *node.Config) {
		cfg.LeaseTTL = time.Minute // only a purge could remove the binding
		cfg.DepartGrace = time.Second
	})
	victim := ns[0] // the lowest ID: one of the others is the survivor
	for _, n := range ns[1:] {
		if n.ID().ID < victim.ID().ID {
			victim = n
		}
	}
	client, _ := victim.Connect("falsely-dead", "")
	probe := c.Redis.Open(t)
	t.Cleanup(func() { probe.Close() })
	lookup := func() []string { return boundTo(t, probe, "falsely-dead") }
	if got := lookup(); !slices.Equal(got, []string{victim.ID().ID}) {
		t.Fatalf("bound to %v", got)
	}
	var others []*nodetest.Node
	for _, n := range ns {
		if n != victim {
			others = append(others, n)
		}
	}
	m, ok := others[0].GossipMember(victim.ID().ID)
	if !ok {
		t.Fatal("the others do not know the victim")
	}
	refuted := func(n *nodetest.Node) float64 {
		for _, line := range strings.Split(n.Get("/metrics").Body, "\n") {
			if v, ok := strings.CutPrefix(line, "herald_cluster_departures_refuted_total "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	for _, n := range others {
		n.ApplyGossip(gossip.Event{Type: gossip.Leave, Member: m})
	}
	// While the others think it dead, a message for its user is posted
	// through one of them; it waits for the victim (DeferTimeout) ...
	id := others[0].Send("sent while dead", "falsely-dead")
	// ... which refutes its death.
	for _, n := range others {
		n.ApplyGossip(gossip.Event{Type: gossip.Join, Member: m})
	}
	if got := client.Message(); got.ID != id {
		t.Fatalf("got %s, want %s", got.ID, id)
	}
	storagetest.Eventually(t, 15*time.Second, func() error {
		for _, n := range others {
			if v := refuted(n); v < 1 {
				return fmt.Errorf("%s: herald_cluster_departures_refuted_total %v", n.ID().ID, v)
			}
		}
		return nil
	})
	if got := lookup(); !slices.Equal(got, []string{victim.ID().ID}) {
		t.Fatalf("after a refuted death: bound to %v, want the victim still", got)
	}
	// And a message posted after the grace still arrives through the peer.
	id = others[1].Send("after the grace", "falsely-dead")
	if got := client.Message(); got.ID != id {
		t.Fatalf("got %s, want %s", got.ID, id)
	}
}

// Two collectors: the message with the earlier ID can reach a client after
// the one with the later ID. A client that saw only the later one and
// reconnects with since=<it> must still get the earlier one.
func TestReplayCoversMessagesThatRacedBetweenCollectors(t *testing.T) {
	exclusive(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{})
	gate := make(chan struct{})
	var held *slowAppend
	slow := c.AddNode(nodetest.NodeOptions{Roles: []node.Role{node.RoleCollect, node.RoleDispatch}, Config: func(cfg *node.Config) {
		held = &slowAppend{Messages: cfg.Messages, gate: gate}
		cfg.Messages = held
	}})
	fast := c.AddNode(nodetest.NodeOptions{})
	c.Converge()
	alice, _ := fast.Connect("alice", "")
	earlier := make(chan nodetest.Response, 1)
	go func() { earlier <- slow.Post(`{"to":["alice"],"data":"earlier"}`) }() // its ID is taken now
	storagetest.Eventually(t, 5*time.Second, func() error {
		if held.waiting.Load() == 0 {
			return fmt.Errorf("slow append not reached yet")
		}
		return nil
	})
	// IDs of one millisecond order by a random per-collector tag: let the
	// clock move on so the next message's ID is surely later.
	for time.Since(time.Unix(0, held.waiting.Load())) < 2*time.Millisecond {
		time.Sleep(time.Millisecond)
	}
	later := fast.Send("later", "alice")
	if f := alice.Message(); f.ID != later {
		t.Fatalf("got %+v", f)
	}
	alice.Conn.CloseNow() // disconnects having seen only the later message
	close(gate)           // the earlier one is stored now
	r := <-earlier
	if r.Status != 202 || r.ID >= later {
		t.Fatalf("earlier post: %+v (id must sort before %s)", r, later)
	}
	_, replayed := fast.Connect("alice", "since="+later)
	var ids []string
	for _, f := range replayed {
		ids = append(ids, f.ID)
	}
	if !slices.Contains(ids, r.ID) {
		t.Fatalf("replay since %s gave %v: the earlier message %s slipped behind the cursor", later, ids, r.ID)
	}
}

// slowAppend holds every Append until gate is closed: a collector whose
// store write is slow.
type slowAppend struct {
	storage.Messages
	gate    chan struct{}
	waiting atomic.Int64 // when an append began waiting at the gate (Unix ns)
}

func (s *slowAppend) Append(ctx context.Context, m *storage.Message) (*storage.Message, error) {
	s.waiting.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Messages.Append(ctx, m)
}

func TestSplitRolesFindEachOther(t *testing.T) {
	exclusive(t)
	c := nodetest.NewCluster(t, nodetest.ClusterOptions{})
	authN := c.AddNode(nodetest.NodeOptions{ID: "auth-1", Roles: []node.Role{node.RoleAuth}})
	collect := c.AddNode(nodetest.NodeOptions{ID: "collect-1", Roles: []node.Role{node.RoleCollect}})
	c.AddNode(nodetest.NodeOptions{ID: "dispatch-1", Roles: []node.Role{node.RoleDispatch}})
	push := c.AddNode(nodetest.NodeOptions{ID: "push-1", Roles: []node.Role{node.RolePush}, Config: func(cfg *node.Config) {
		cfg.Auth = nil // no local verifier: tokens are checked by the auth node over RPC
	}})
	c.Converge()
	_ = authN
	alice, _ := push.Connect("alice", "")
	id := collect.Send("split", "alice")
	if f := alice.Message(); f.ID != id {
		t.Fatalf("got %+v", f)
	}
	// A bad token is refused by the auth node, through the push node.
	req, _ := http.NewRequest("GET", push.URL()+"/ws?token=bad", nil)
	req.Header.Set("Upgrade", "websocket")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token through the auth node: %d", resp.StatusCode)
	}
}

// A rolling restart of every node while messages flow steadily to many
// users: every message reaches every user; duplicates are counted. It runs
// with MongoDB (FerretDB) for a few dozen users, and for hundreds of users
// with one durable store the in-process nodes share: an in-process
// FerretDB decodes every stored message on every replay (it pushes down
// only _id equality), about a millisecond each under -race, and every user
// replays on each of its three reconnects.
func TestRollingRestartLosesNothing(t *testing.T) {
	t.Run("mongo", func(t *testing.T) { testRollingRestart(t, 40, nodetest.ClusterOptions{}) })
	t.Run("shared-store", func(t *testing.T) {
		store, err := embedded.Open(t.TempDir(), embedded.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		testRollingRestart(t, 250, nodetest.ClusterOptions{Messages: store})
	})
}

func testRollingRestart(t *testing.T, users int, opts nodetest.ClusterOptions) {
	exclusive(t)
	c := nodetest.NewCluster(t, opts)
	var ns []*nodetest.Node
	for range 3 {
		ns = append(ns, c.AddNode(nodetest.NodeOptions{Config: func(cfg *node.Config) { cfg.DrainSpread = 300 * time.Millisecond }}))
	}
	c.Converge()
	fs := make([]*nodetest.Follower, users)
	for i := range fs {
		fs[i] = c.Follow(fmt.Sprint("roll-", i))
	}
	for _, f := range fs {
		f.Ready(1)
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	sent := map[string][]string{}
	acceptedBy := map[string]string{}
	acceptedAt := map[string]time.Time{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			nodes := c.Nodes()
			var target *nodetest.Node
			for _, n := range nodes {
				if n.State() == node.StateRunning && rand.IntN(len(nodes)) == 0 {
					target = n
				}
			}
			if target == nil {
				continue
			}
			f := fs[rand.IntN(users)]
			r := target.Post(map[string]any{"to": []string{f.User}, "data": i})
			switch r.Status {
			case 202:
				mu.Lock()
				sent[f.User] = append(sent[f.User], r.ID)
				acceptedBy[r.ID] = target.ID().String()
				acceptedAt[r.ID] = time.Now()
				mu.Unlock()
			case 0, 503:
				// the node was stopping: not accepted, a real client retries
			default:
				t.Errorf("post: %d %s", r.Status, r.Body)
			}
			time.Sleep(4 * time.Millisecond) // ~200 messages a second, steady
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ids := range sent {
			n += len(ids)
		}
		return n
	}
	// waitSent waits until n more messages were accepted: traffic flows
	// through every phase of the restart.
	waitSent := func(n int) {
		start := count()
		storagetest.Eventually(t, 60*time.Second, func() error {
			if got := count() - start; got < n {
				return fmt.Errorf("%d of %d messages sent", got, n)
			}
			return nil
		})
	}
	for _, old := range ns {
		waitSent(20)
		id := old.ID().ID
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := old.Drain(ctx); err != nil {
			t.Errorf("drain %s: %v", id, err)
		}
		cancel()
		old.Stop()
		c.AddNode(nodetest.NodeOptions{ID: id})
		c.Converge()
	}
	waitSent(50) // and on the fully restarted cluster
	close(stop)
	wg.Wait()
	total, dups, lost := 0, 0, 0
	for _, f := range fs {
		mu.Lock()
		ids := sent[f.User]
		mu.Unlock()
		total += len(ids)
		if err := f.WaitAll(ids, 10*time.Second); err != nil {
			lost += len(f.Missing(ids))
			t.Error(err)
			for _, line := range f.Log() {
				t.Logf("  %s: %s", f.User, line)
			}
			mu.Lock()
			for _, id := range f.Missing(ids) {
				t.Logf("  missing %s accepted by %s at %s", id, acceptedBy[id], acceptedAt[id].Format("15:04:05.000"))
			}
			mu.Unlock()
		}
		dups += f.Duplicates()
	}
	t.Logf("rolling restart of 3 nodes: %d messages to %d users, %d lost, %d duplicates delivered", total, users, lost, dups)
	if total < 110 {
		t.Fatalf("only %d messages sent: the test did not exercise anything", total)
	}
}
