package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/memory"
)

// gatedBindings holds every Bind until released.
type gatedBindings struct {
	storage.Bindings
	gate  chan struct{}
	binds atomic.Int32
}

func (g *gatedBindings) Bind(ctx context.Context, n storage.Node, users []string) error {
	g.binds.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Bindings.Bind(ctx, n, users)
}

// onlineSet is a presenceEdge whose users a test sets.
type onlineSet struct {
	mu    sync.Mutex
	users map[string]bool
}

func (o *onlineSet) Online(u string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.users[u]
}

func (o *onlineSet) Users() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for u := range o.users {
		out = append(out, u)
	}
	return out
}

func (o *onlineSet) UsersInShard(int) []string { return nil }

// Settle returns only once the binding is written, even when the flush
// carrying it has already taken it from the pending set (the race where
// Settle used to find nothing pending and return at once).
func TestSettleWaitsForTheFlushInProgress(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	src := newSources("n1", log, m)
	t.Cleanup(src.shutdown)
	mem := memory.NewBindings(nil)
	b := &gatedBindings{Bindings: mem, gate: make(chan struct{})}
	cfg := DefaultConfig()
	self := storage.Node{ID: "n1", Incarnation: "i1"}
	p := newPresence(self, b, src, log, m, &cfg)
	edge := &onlineSet{users: map[string]bool{"alice": true}}
	p.edge = edge
	if err := p.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.shutdown(context.Background()) })
	p.Online("alice")
	// Wait until the flush took alice and is writing her binding.
	deadline := time.Now().Add(5 * time.Second)
	for b.binds.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no flush started")
		}
		time.Sleep(time.Millisecond)
	}
	settled := make(chan struct{})
	go func() {
		p.Settle(context.Background(), "alice")
		close(settled)
	}()
	select {
	case <-settled:
		t.Fatal("Settle returned while alice's binding was still being written")
	case <-time.After(100 * time.Millisecond):
	}
	close(b.gate)
	select {
	case <-settled:
	case <-time.After(5 * time.Second):
		t.Fatal("Settle did not return once the binding was written")
	}
	got, err := mem.Lookup(context.Background(), []string{"alice"})
	if err != nil || len(got["alice"]) != 1 {
		t.Fatalf("after Settle alice is bound to %v (%v)", got, err)
	}
}
