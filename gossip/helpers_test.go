package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain is goleak.VerifyTestMain with a longer wait: after Shutdown,
// memberlist's goroutines end on their own timers, and a probe in flight
// on an overloaded machine waits up to 8 (awareness-scaled) probe
// intervals, longer than goleak retries. A goroutine that never ends still
// fails the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testLogger discards logs unless GOSSIP_TEST_LOG is set.
func testLogger(name string) *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_node", name)
}

func testMeta(id, inc string) Meta {
	return Meta{
		ID: id, Incarnation: inc,
		Roles:     []string{RoleAuth, RoleCollect, RoleDispatch, RolePush},
		RPCAddr:   "127.0.0.1:9" + id,
		PublicURL: "http://127.0.0.1:8" + id,
		Version:   "test",
		State:     "running",
	}
}

// fastConfig is a config with timings for tests: a crash is detected in
// about half a second, and an overloaded machine (-race, -count, many
// packages at once) rarely declares a live node dead. Tests still accept
// such a flap: a member may leave and join again.
func fastConfig(id, inc string) Config {
	c := DefaultConfig()
	c.Meta = testMeta(id, inc)
	c.Profile = ProfileLocal
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 80 * time.Millisecond
	c.GossipInterval = 10 * time.Millisecond
	c.SuspicionMult = 4
	c.PushPullInterval = 300 * time.Millisecond
	c.RejoinInterval = 100 * time.Millisecond
	c.BroadcastTimeout = 5 * time.Second
	c.Logger = testLogger(id + "." + inc)
	return c
}

// tnode is a started Gossip whose events are recorded.
type tnode struct {
	g    *Gossip
	mu   sync.Mutex
	evs  []Event
	done chan struct{} // closed when Events is closed
}

// startNode starts a Gossip from cfg; cleanup shuts it down and checks
// that its Events channel was closed.
func startNode(t *testing.T, cfg Config) *tnode {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n := &tnode{g: g, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		for ev := range g.Events() {
			n.mu.Lock()
			n.evs = append(n.evs, ev)
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { n.stop(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return n
}

// stop shuts the node down without leaving (a crash, to the others).
func (n *tnode) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.g.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case <-n.done:
	case <-ctx.Done():
		t.Error("Events not closed after Shutdown")
	}
}

func (n *tnode) events() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.evs)
}

// find returns the first recorded event of type typ about node name.
func (n *tnode) find(typ EventType, name string) (Event, bool) {
	for _, ev := range n.events() {
		if ev.Type == typ && ev.Member.NodeName() == name {
			return ev, true
		}
	}
	return Event{}, false
}

// waitEvent waits until n has recorded an event of type typ about node
// name and returns the first such event.
func (n *tnode) waitEvent(t *testing.T, typ EventType, name string) Event {
	t.Helper()
	var ev Event
	eventually(t, 5*time.Second, func() bool {
		var ok bool
		ev, ok = n.find(typ, name)
		return ok
	}, func() string {
		return fmt.Sprintf("%s: no %v of %s in %v", n.g.Local().NodeName(), typ, name, n.events())
	})
	return ev
}

// last returns the last recorded event about node name.
func (n *tnode) last(name string) (Event, bool) {
	evs := n.events()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Member.NodeName() == name {
			return evs[i], true
		}
	}
	return Event{}, false
}

// names returns the node names of g's members.
func names(g *Gossip) []string {
	var out []string
	for _, m := range g.Members() {
		out = append(out, m.NodeName())
	}
	return out
}

// eventually polls cond every 5 ms until it holds, or fails the test with
// msg() once timeout has passed.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMembers waits until every node sees exactly want (node names, sorted).
func waitMembers(t *testing.T, timeout time.Duration, want []string, nodes ...*tnode) {
	t.Helper()
	slices.Sort(want)
	for _, n := range nodes {
		eventually(t, timeout, func() bool { return slices.Equal(names(n.g), want) }, func() string {
			return fmt.Sprintf("%s sees %v, want %v", n.g.Local().NodeName(), names(n.g), want)
		})
	}
}
