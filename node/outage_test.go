package node_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/nodetest"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/storagetest"
)

// MongoDB stops: POST answers 503 and stores nothing, /readyz turns
// not-ready; when MongoDB is back the node recovers without a restart.
func TestMongoDownAnswers503AndRecovers(t *testing.T) {
	t.Parallel()
	mt := nodetest.OwnMongo(t)
	n := nodetest.Start(t, nodetest.Options{Backend: nodetest.External, Mongo: mt})
	c, _ := n.Connect("alice", "")
	before := n.Send("before", "alice")
	c.Message()

	mt.Server.Stop()
	start := time.Now()
	r := n.Post(map[string]any{"to": []string{"alice"}, "data": "during", "key": "outage-key"})
	if r.Status != http.StatusServiceUnavailable || r.Error.Code != "store_unavailable" {
		t.Fatalf("post with MongoDB down: %d %s", r.Status, r.Body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("post took %v to fail", d)
	}
	if r := n.Get("/readyz"); r.Status != http.StatusServiceUnavailable || r.Error.Code != "not_ready" {
		t.Fatalf("readyz with MongoDB down: %d %s", r.Status, r.Body)
	}
	if r := n.Get("/healthz"); r.Status != http.StatusOK {
		t.Fatalf("healthz must stay up (liveness): %d", r.Status)
	}

	mt.Server.Start()
	storagetest.Eventually(t, 30*time.Second, func() error {
		if r := n.Get("/readyz"); r.Status != http.StatusOK {
			return fmt.Errorf("readyz %d %s", r.Status, r.Body)
		}
		return nil
	})
	// The client retries with the same key: accepted once, delivered once.
	r = n.Post(map[string]any{"to": []string{"alice"}, "data": "retried", "key": "outage-key"})
	if r.Status != http.StatusAccepted || r.Duplicate {
		t.Fatalf("retry after recovery: %d %s", r.Status, r.Body)
	}
	if f := c.Message(); f.ID != r.ID || string(f.Data) != `"retried"` {
		t.Fatalf("after recovery got %+v", f)
	}
	_, replayed := n.Connect("alice", "since="+storage.IDAt(time.Now().Add(-time.Hour)))
	var ids []string
	for _, f := range replayed {
		ids = append(ids, f.ID)
	}
	if !slices.Equal(ids, []string{before, r.ID}) {
		t.Fatalf("stored %v, want %v (nothing from the failed POST)", ids, []string{before, r.ID})
	}
}

// Redis is a cache of who is where: while it is down a single node keeps
// delivering; when it comes back empty the node binds its users again by
// itself; on shutdown the node removes its bindings.
func TestRedisRestartedEmptyIsRepopulated(t *testing.T) {
	t.Parallel()
	rt := nodetest.OwnRedis(t)
	n := nodetest.Start(t, nodetest.Options{Backend: nodetest.External, Redis: rt})
	alice, _ := n.Connect("alice", "")
	n.Connect("bob", "")
	probe := rt.Open(t)
	t.Cleanup(func() { probe.Close() })
	bound := func(want bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		got, err := probe.Lookup(ctx, []string{"alice", "bob"})
		if err != nil {
			return err
		}
		ok := slices.Equal(got["alice"], []string{n.ID().ID}) && slices.Equal(got["bob"], []string{n.ID().ID})
		if ok != want {
			return fmt.Errorf("bindings %v, want bound=%v", got, want)
		}
		return nil
	}
	if err := bound(true); err != nil { // written before "ready" (Settle)
		t.Fatal(err)
	}

	rt.Server.Stop()
	id := n.Send("while redis is down", "alice")
	if f := alice.Message(); f.ID != id {
		t.Fatalf("got %+v", f)
	}
	rt.Server.Start() // empty
	storagetest.Eventually(t, 30*time.Second, func() error { return bound(true) })

	n.Stop()
	if err := bound(false); err != nil {
		t.Fatalf("after shutdown: %v", err)
	}
}

// Binding keys expire (KeyTTL) unless the node writes them again; a node
// re-binds every local user once per RebindInterval, spread out, so a
// connection that lives longer than KeyTTL stays reachable.
func TestLongLivedConnectionsStayBound(t *testing.T) {
	t.Parallel()
	rt := nodetest.SharedRedis(t)
	rt.KeyTTL = 2 * time.Second
	n := nodetest.Start(t, nodetest.Options{Backend: nodetest.External, Redis: rt,
		Config: func(c *node.Config) { c.RebindInterval = 200 * time.Millisecond }})
	n.Connect("olga", "")
	probe := rt.Open(t)
	t.Cleanup(func() { probe.Close() })
	start := time.Now()
	for time.Since(start) < 6*time.Second { // three key lifetimes
		got, err := probe.Lookup(context.Background(), []string{"olga"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got["olga"]) != 1 {
			t.Fatalf("binding expired after %v", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond) // sampling the binding over time
	}
}
