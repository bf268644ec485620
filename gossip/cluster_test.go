package gossip

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// memCluster starts n nodes "1".."n" (incarnation "a") on net, each
// seeded with the first node's address, with fastConfig changed by mods.
func memCluster(t *testing.T, net *memNet, n int, mods ...func(*Config)) []*tnode {
	t.Helper()
	first := net.reserve()
	var nodes []*tnode
	for i := range n {
		cfg := fastConfig(fmt.Sprint(i+1), "a")
		for _, mod := range mods {
			mod(&cfg)
		}
		addr := ""
		if i == 0 {
			addr = first
		}
		cfg.Transport = net.transport(addr)
		cfg.Seeds = []string{first}
		nodes = append(nodes, startNode(t, cfg))
	}
	return nodes
}

func nodeNames(nodes ...*tnode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.g.Local().NodeName())
	}
	return out
}

func TestClusterConverges(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	net := newMemNet()
	first := net.reserve()
	var nodes []*tnode
	for i := range 3 {
		cfg := fastConfig(fmt.Sprint(i+1), "a")
		addr := ""
		if i == 0 {
			addr = first
			cfg.Registerer = reg
		}
		cfg.Transport = net.transport(addr)
		cfg.Seeds = []string{first}
		nodes = append(nodes, startNode(t, cfg))
	}
	want := nodeNames(nodes...)
	waitMembers(t, 5*time.Second, want, nodes...)

	// Every node saw every node join, itself first, with its decoded Meta.
	for _, n := range nodes {
		eventually(t, 5*time.Second, func() bool {
			for _, w := range want {
				if _, ok := n.find(Join, w); !ok {
					return false
				}
			}
			return true
		}, func() string { return fmt.Sprintf("%s saw %v", n.g.Local().NodeName(), n.events()) })
		evs := n.events()
		if evs[0].Type != Join || evs[0].Member.NodeName() != n.g.Local().NodeName() {
			t.Errorf("%s: first event %v, want its own join", n.g.Local().NodeName(), evs[0])
		}
		for _, other := range nodes {
			ev := n.waitEvent(t, Join, other.g.Local().NodeName())
			if !slices.Equal(ev.Member.Roles, other.g.Local().Roles) || ev.Member.RPCAddr != other.g.Local().RPCAddr ||
				ev.Member.PublicURL != other.g.Local().PublicURL || ev.Member.Addr != other.g.Addr() {
				t.Errorf("join event %+v does not match %+v at %s", ev.Member, other.g.Local(), other.g.Addr())
			}
		}
	}
	if got := testutil.ToFloat64(nodes[0].g.metrics.members); got != 3 {
		t.Errorf("herald_gossip_members = %v, want 3", got)
	}
	if n, err := testutil.GatherAndCount(reg, "herald_gossip_members", "herald_gossip_events_total"); err != nil || n != 4 {
		t.Errorf("gathered %d series (err %v), want 4", n, err)
	}
}

func TestUpdateMetaPropagates(t *testing.T) {
	t.Parallel()
	nodes := memCluster(t, newMemNet(), 3)
	waitMembers(t, 5*time.Second, nodeNames(nodes...), nodes...)

	a := nodes[0]
	m := a.g.Local().Meta
	m.State = "draining"
	m.Roles = []string{RolePush}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.g.UpdateMeta(ctx, m); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	if got := a.g.Local(); got.State != "draining" {
		t.Errorf("Local().State = %q", got.State)
	}
	name := a.g.Local().NodeName()
	for _, n := range nodes {
		// An Update, or the Join if it was still queued (or after a flap).
		eventually(t, 5*time.Second, func() bool {
			ev, ok := n.last(name)
			return ok && ev.Type != Leave && ev.Member.State == "draining" && slices.Equal(ev.Member.Roles, []string{RolePush})
		}, func() string { return fmt.Sprintf("%s saw %v", n.g.Local().NodeName(), n.events()) })
		eventually(t, 5*time.Second, func() bool {
			for _, mem := range n.g.Members() {
				if mem.NodeName() == name {
					return mem.State == "draining" && !mem.HasRole(RoleAuth) && mem.HasRole(RolePush)
				}
			}
			return false
		}, func() string { return fmt.Sprintf("%s lists %+v", n.g.Local().NodeName(), n.g.Members()) })
	}

	bad := m
	bad.Incarnation = "b"
	if err := a.g.UpdateMeta(ctx, bad); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("UpdateMeta with a new incarnation: %v, want ErrInvalidMeta", err)
	}
	big := m
	big.Version = string(make([]byte, 600))
	if err := a.g.UpdateMeta(ctx, big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta with 600 bytes: %v, want ErrMetaTooLarge", err)
	}
}

func TestLeaveIsSeenQuickly(t *testing.T) {
	t.Parallel()
	// Slow failure detection (suspicion lasts at least 3 s), to tell a
	// gossiped leave from a detected failure.
	nodes := memCluster(t, newMemNet(), 3, func(c *Config) { c.SuspicionMult = 30 })
	waitMembers(t, 5*time.Second, nodeNames(nodes...), nodes...)

	c := nodes[2]
	name := c.g.Local().NodeName()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.g.Leave(ctx); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if c.g.State() != StateLeft {
		t.Errorf("state after Leave: %v", c.g.State())
	}
	if err := c.g.Leave(ctx); err != nil {
		t.Errorf("second Leave: %v", err)
	}
	if err := c.g.UpdateMeta(ctx, c.g.Local().Meta); !errors.Is(err, ErrNotRunning) {
		t.Errorf("UpdateMeta after Leave: %v, want ErrNotRunning", err)
	}
	// Leave is gossiped, not detected: well under the failure detection time.
	waitMembers(t, 2*time.Second, nodeNames(nodes[:2]...), nodes[:2]...)
	t.Logf("leave seen by all after %v", time.Since(start))
	for _, n := range nodes {
		if ev := n.waitEvent(t, Leave, name); ev.Member.RPCAddr != c.g.Local().RPCAddr {
			t.Errorf("leave event without meta: %+v", ev.Member)
		}
	}
	if got := names(c.g); slices.Contains(got, name) {
		t.Errorf("a node that left lists itself: %v", got)
	}
}

func TestCrashIsDetected(t *testing.T) {
	t.Parallel()
	nodes := memCluster(t, newMemNet(), 3)
	waitMembers(t, 5*time.Second, nodeNames(nodes...), nodes...)

	c := nodes[2]
	name := c.g.Local().NodeName()
	start := time.Now()
	c.stop(t) // no Leave
	if c.g.State() != StateShutdown || c.g.Members() != nil {
		t.Errorf("after Shutdown: state %v, members %v", c.g.State(), c.g.Members())
	}
	waitMembers(t, 5*time.Second, nodeNames(nodes[:2]...), nodes[:2]...)
	t.Logf("crash detected by all after %v", time.Since(start))
	for _, n := range nodes[:2] {
		n.waitEvent(t, Leave, name)
	}
}

func TestRestartIsNewMember(t *testing.T) {
	t.Parallel()
	net := newMemNet()
	nodes := memCluster(t, net, 3)
	waitMembers(t, 5*time.Second, nodeNames(nodes...), nodes...)
	seed := nodes[0].g.Addr()

	// A second process with the same ID while the first still runs (the
	// old one not yet dead): both are members, told apart by incarnation.
	cfg := fastConfig("3", "b")
	cfg.Transport = net.transport("")
	cfg.Seeds = []string{seed}
	c2 := startNode(t, cfg)
	all := append(nodeNames(nodes...), "3.b")
	waitMembers(t, 5*time.Second, all, append(nodes, c2)...)
	eventually(t, 5*time.Second, func() bool {
		ids := 0
		for _, m := range nodes[0].g.Members() {
			if m.ID == "3" {
				ids++
			}
		}
		return ids == 2
	}, func() string { return fmt.Sprintf("want two members with ID 3: %v", names(nodes[0].g)) })

	// The old life dies and leaves; the new one stays.
	nodes[2].stop(t)
	waitMembers(t, 5*time.Second, []string{"1.a", "2.a", "3.b"}, nodes[0], nodes[1], c2)
	nodes[0].waitEvent(t, Leave, "3.a")

	// A restart at the same address as a crashed life: a new member too.
	c2.stop(t)
	waitMembers(t, 5*time.Second, []string{"1.a", "2.a"}, nodes[0], nodes[1])
	cfg = fastConfig("3", "c")
	cfg.Transport = net.transport(c2.g.Addr())
	cfg.Seeds = []string{seed}
	c3 := startNode(t, cfg)
	waitMembers(t, 5*time.Second, []string{"1.a", "2.a", "3.c"}, nodes[0], nodes[1], c3)
	if ev := nodes[1].waitEvent(t, Join, "3.c"); ev.Member.Incarnation != "c" || ev.Member.ID != "3" {
		t.Errorf("join of 3.c: %+v", ev)
	}
}

func TestSeedsDownAndSelf(t *testing.T) {
	t.Parallel()
	net := newMemNet()
	down := net.reserve()
	selfAddr := net.reserve()

	cfg := fastConfig("1", "a")
	cfg.Transport = net.transport(selfAddr)
	cfg.Seeds = []string{down, selfAddr}
	a := startNode(t, cfg)
	if got := a.g.Addr(); got != selfAddr {
		t.Errorf("Addr() = %q, want %q", got, selfAddr)
	}
	waitMembers(t, time.Second, []string{"1.a"}, a)

	cfg = fastConfig("2", "a")
	cfg.Transport = net.transport("")
	cfg.Seeds = []string{down, selfAddr, cfg.Transport.(*memTransport).addr}
	b := startNode(t, cfg)
	waitMembers(t, 5*time.Second, []string{"1.a", "2.a"}, a, b)
}

func TestStartWithoutReachableSeedsThenMerge(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	net := newMemNet()
	bAddr := net.reserve()

	// A starts first; its seed B is not up: A forms its own cluster.
	cfg := fastConfig("a", "1")
	cfg.Transport = net.transport("")
	cfg.Seeds = []string{bAddr}
	cfg.Registerer = reg
	a := startNode(t, cfg)
	waitMembers(t, time.Second, []string{"a.1"}, a)
	failed := a.g.metrics.joins.WithLabelValues("failed")
	if testutil.ToFloat64(failed) < 1 {
		t.Errorf("no failed join counted")
	}

	// B comes up alone (no seeds); A's rejoin loop merges the two.
	cfg = fastConfig("b", "1")
	cfg.Transport = net.transport(bAddr)
	b := startNode(t, cfg)
	start := time.Now()
	waitMembers(t, 10*cfg.RejoinInterval+time.Second, []string{"a.1", "b.1"}, a, b)
	t.Logf("merged after %v (rejoin interval %v)", time.Since(start), cfg.RejoinInterval)
	// Join returns (and is counted) after the merge is visible.
	ok := a.g.metrics.joins.WithLabelValues("ok")
	eventually(t, time.Second, func() bool { return testutil.ToFloat64(ok) == 1 },
		func() string { return fmt.Sprintf("ok joins = %v, want 1", testutil.ToFloat64(ok)) })
}

func TestPartitionHeals(t *testing.T) {
	t.Parallel()
	net := newMemNet()
	nodes := memCluster(t, net, 3)
	all := nodeNames(nodes...)
	waitMembers(t, 5*time.Second, all, nodes...)

	// Cut node 1 (the seed) from 2 and 3: each side declares the other dead.
	net.partition([]string{nodes[0].g.Addr()}, []string{nodes[1].g.Addr(), nodes[2].g.Addr()})
	waitMembers(t, 5*time.Second, all[:1], nodes[0])
	waitMembers(t, 5*time.Second, all[1:], nodes[1], nodes[2])

	// Heal: 2 and 3 rejoin their seed, node 1.
	net.heal()
	waitMembers(t, 5*time.Second, all, nodes...)
	for _, n := range nodes[1:] {
		seq := func() []EventType {
			var seq []EventType
			for _, ev := range n.events() {
				if ev.Member.NodeName() == "1.a" {
					seq = append(seq, ev.Type)
				}
			}
			return seq
		}
		eventually(t, time.Second, func() bool {
			s := seq()
			return len(s) >= 3 && s[0] == Join && slices.Contains(s, Leave) && s[len(s)-1] == Join
		}, func() string {
			return fmt.Sprintf("%s saw 1.a: %v, want join, leave, join", n.g.Local().NodeName(), seq())
		})
	}
}

// TestEventsCoalesceWhileConsumerIsBehind: updates made while nobody reads
// Events are delivered once, with the latest Meta.
func TestEventsCoalesceWhileConsumerIsBehind(t *testing.T) {
	t.Parallel()
	net := newMemNet()
	nodes := memCluster(t, net, 2)
	waitMembers(t, 5*time.Second, nodeNames(nodes...), nodes...)

	cfg := fastConfig("slow", "a")
	cfg.Transport = net.transport("")
	cfg.Seeds = []string{nodes[0].g.Addr()}
	cfg.EventBuffer = 0
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer g.Shutdown(ctx)
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return len(g.Members()) == 3 }, func() string { return fmt.Sprint(names(g)) })

	// Nobody reads g.Events(): its forwarder is stuck on the first event.
	m := nodes[1].g.Local().Meta
	for i := range 5 {
		m.State = fmt.Sprint("s", i)
		if err := nodes[1].g.UpdateMeta(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() bool {
			for _, mem := range g.Members() {
				if mem.NodeName() == "2.a" && mem.State == m.State {
					return true
				}
			}
			return false
		}, func() string { return fmt.Sprint(g.Members()) })
	}
	// Either the join of 2.a is still queued and the updates fold into it,
	// or they fold into one queued update: never five updates.
	var seen []Event
	deadline := time.After(5 * time.Second)
	for len(seen) == 0 || seen[len(seen)-1].Member.State != "s4" {
		select {
		case ev := <-g.Events():
			if ev.Member.NodeName() == "2.a" {
				seen = append(seen, ev)
			}
		case <-deadline:
			t.Fatalf("events about 2.a: %v", seen)
		}
	}
	updates := 0
	for _, ev := range seen {
		if ev.Type == Update {
			updates++
		}
	}
	if updates > 1 || seen[0].Type != Join {
		t.Errorf("events about 2.a: %v, want a join and at most one update", seen)
	}
	if got := testutil.ToFloat64(g.metrics.coalesced); got < 3 {
		t.Errorf("coalesced = %v, want at least 3", got)
	}
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range g.Events() { // closed, perhaps after a few queued events
	}
}
