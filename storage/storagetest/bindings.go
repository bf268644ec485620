package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
)

// BindingsFactory builds binding stores of one backend for [RunBindings].
type BindingsFactory struct {
	// New returns an empty store, isolated from every other store New
	// returned (its own key prefix or server), closed in t.Cleanup. Required.
	New func(t testing.TB) storage.Bindings
	// NewOnOwnServer returns an empty store on a server of its own and a
	// controller for it; Start must bring back an EMPTY server on the same
	// address (a restarted Redis without persistence). Nil for backends
	// without a server.
	NewOnOwnServer func(t testing.TB) (storage.Bindings, *Server)
}

// RunBindings runs the Bindings contract against f.
func RunBindings(t *testing.T, f BindingsFactory) {
	t.Run("LeaseFreshThenRenewed", func(t *testing.T) { t.Parallel(); bindingsLease(t, f) })
	t.Run("LeaseHolder", func(t *testing.T) { t.Parallel(); bindingsLeaseHolder(t, f) })
	t.Run("BindLookupUnbind", func(t *testing.T) { t.Parallel(); bindingsBasic(t, f) })
	t.Run("SeveralNodesPerUser", func(t *testing.T) { t.Parallel(); bindingsMultiNode(t, f) })
	t.Run("NoLeaseNoLookup", func(t *testing.T) { t.Parallel(); bindingsNeedLease(t, f) })
	t.Run("DeadNodeExpires", func(t *testing.T) { t.Parallel(); bindingsExpire(t, f) })
	t.Run("Incarnations", func(t *testing.T) { t.Parallel(); bindingsIncarnations(t, f) })
	t.Run("Purge", func(t *testing.T) { t.Parallel(); bindingsPurge(t, f) })
	t.Run("LookupBatch", func(t *testing.T) { t.Parallel(); bindingsBatch(t, f) })
	t.Run("Concurrent", func(t *testing.T) { t.Parallel(); bindingsConcurrent(t, f) })
	t.Run("Validates", func(t *testing.T) { t.Parallel(); bindingsValidates(t, f) })
	t.Run("ClosedStore", func(t *testing.T) { t.Parallel(); bindingsClosed(t, f) })
	t.Run("ServerGoneAndBackEmpty", func(t *testing.T) {
		if f.NewOnOwnServer == nil {
			t.Skip("backend has no server")
		}
		t.Parallel()
		bindingsServerGone(t, f)
	})
}

var (
	nodeA  = storage.Node{ID: "node-a", Incarnation: "1"}
	nodeA2 = storage.Node{ID: "node-a", Incarnation: "2"}
	nodeB  = storage.Node{ID: "node-b", Incarnation: "1"}
)

// MustLease leases n for ttl and fails the test on error.
func MustLease(t testing.TB, b storage.Bindings, n storage.Node, ttl time.Duration) bool {
	t.Helper()
	fresh, err := b.Lease(ctxT(t), n, ttl)
	if err != nil {
		t.Fatalf("lease %s: %v", n, err)
	}
	return fresh
}

// MustBind binds users to n and fails the test on error.
func MustBind(t testing.TB, b storage.Bindings, n storage.Node, users ...string) {
	t.Helper()
	if err := b.Bind(ctxT(t), n, users); err != nil {
		t.Fatalf("bind %v to %s: %v", users, n, err)
	}
}

// MustLookup looks users up and fails the test on error. Node lists are
// sorted.
func MustLookup(t testing.TB, b storage.Bindings, users ...string) map[string][]string {
	t.Helper()
	got, err := b.Lookup(ctxT(t), users)
	if err != nil {
		t.Fatalf("lookup %v: %v", users, err)
	}
	for _, nodes := range got {
		sort.Strings(nodes)
	}
	return got
}

func assertBound(t testing.TB, got map[string][]string, want map[string][]string) {
	t.Helper()
	for u, nodes := range want {
		if !slices.Equal(got[u], nodes) {
			t.Fatalf("user %s bound to %v, want %v (all: %v)", u, got[u], nodes, got)
		}
	}
	for u, nodes := range got {
		if _, ok := want[u]; !ok {
			t.Fatalf("user %s unexpectedly bound to %v", u, nodes)
		}
	}
}

func bindingsLease(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	if !MustLease(t, b, nodeA, time.Minute) {
		t.Fatal("first lease not reported fresh")
	}
	if MustLease(t, b, nodeA, time.Minute) {
		t.Fatal("renewal reported fresh")
	}
	if !MustLease(t, b, nodeA2, time.Minute) {
		t.Fatal("a new incarnation's first lease not reported fresh")
	}
}

// LeaseHolder names the incarnation whose lease is alive: none before a
// lease, the newest incarnation after one, none after a purge or once the
// lease expired.
func bindingsLeaseHolder(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	holder := func(id string) string {
		t.Helper()
		inc, err := b.LeaseHolder(ctxT(t), id)
		if err != nil {
			t.Fatalf("lease holder of %s: %v", id, err)
		}
		return inc
	}
	if got := holder("node-a"); got != "" {
		t.Fatalf("holder before any lease = %q", got)
	}
	MustLease(t, b, nodeA, time.Minute)
	MustLease(t, b, nodeB, 300*time.Millisecond)
	if got := holder("node-a"); got != nodeA.Incarnation {
		t.Fatalf("holder = %q, want %q", got, nodeA.Incarnation)
	}
	MustLease(t, b, nodeA2, time.Minute)
	if got := holder("node-a"); got != nodeA2.Incarnation {
		t.Fatalf("holder after a restart = %q, want %q", got, nodeA2.Incarnation)
	}
	if _, err := b.Purge(ctxT(t), nodeA2); err != nil {
		t.Fatal(err)
	}
	if got := holder("node-a"); got != "" {
		t.Fatalf("holder after purge = %q", got)
	}
	Eventually(t, 10*time.Second, func() error {
		if got := holder("node-b"); got != "" {
			return fmt.Errorf("an expired lease is still held by %q", got)
		}
		return nil
	})
}

func bindingsBasic(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, time.Minute)
	MustBind(t, b, nodeA, "alice", "bob")
	MustBind(t, b, nodeA, "alice") // idempotent
	assertBound(t, MustLookup(t, b, "alice", "bob", "carol"), map[string][]string{
		"alice": {"node-a"}, "bob": {"node-a"},
	})
	if err := b.Unbind(ctxT(t), nodeA, []string{"alice", "nobody"}); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	assertBound(t, MustLookup(t, b, "alice", "bob"), map[string][]string{"bob": {"node-a"}})
	if got := MustLookup(t, b); len(got) != 0 {
		t.Fatalf("empty lookup returned %v", got)
	}
}

func bindingsMultiNode(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, time.Minute)
	MustLease(t, b, nodeB, time.Minute)
	MustBind(t, b, nodeA, "alice")
	MustBind(t, b, nodeB, "alice", "bob")
	assertBound(t, MustLookup(t, b, "alice", "bob"), map[string][]string{
		"alice": {"node-a", "node-b"}, "bob": {"node-b"},
	})
	if err := b.Unbind(ctxT(t), nodeB, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	assertBound(t, MustLookup(t, b, "alice", "bob"), map[string][]string{
		"alice": {"node-a"}, "bob": {"node-b"},
	})
}

func bindingsNeedLease(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustBind(t, b, nodeA, "alice")
	assertBound(t, MustLookup(t, b, "alice"), nil)
	MustLease(t, b, nodeA, time.Minute)
	assertBound(t, MustLookup(t, b, "alice"), map[string][]string{"alice": {"node-a"}})
}

func bindingsExpire(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, 300*time.Millisecond)
	MustLease(t, b, nodeB, time.Minute)
	MustBind(t, b, nodeA, "alice")
	MustBind(t, b, nodeB, "bob")
	// node-a stops renewing: it died without unbinding.
	Eventually(t, 10*time.Second, func() error {
		got, err := b.Lookup(ctxT(t), []string{"alice", "bob"})
		if err != nil {
			return err
		}
		if len(got["alice"]) != 0 {
			return fmt.Errorf("alice still bound to %v", got["alice"])
		}
		if !slices.Equal(got["bob"], []string{"node-b"}) {
			t.Fatalf("a live node's binding vanished: %v", got)
		}
		return nil
	})
	// The node comes back (same incarnation): its lease is fresh, so it
	// knows to bind again.
	if !MustLease(t, b, nodeA, time.Minute) {
		t.Fatal("lease after lapse not reported fresh")
	}
	MustBind(t, b, nodeA, "alice")
	assertBound(t, MustLookup(t, b, "alice", "bob"), map[string][]string{"alice": {"node-a"}, "bob": {"node-b"}})
}

func bindingsIncarnations(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, time.Minute)
	MustBind(t, b, nodeA, "alice", "bob")
	// node-a restarts as incarnation 2 before its old lease expired.
	MustLease(t, b, nodeA2, time.Minute)
	assertBound(t, MustLookup(t, b, "alice", "bob"), nil)
	MustBind(t, b, nodeA2, "alice")
	assertBound(t, MustLookup(t, b, "alice", "bob"), map[string][]string{"alice": {"node-a"}})
	// The old incarnation's late unbind and purge leave the new one alone.
	if err := b.Unbind(ctxT(t), nodeA, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Purge(ctxT(t), nodeA); err != nil {
		t.Fatal(err)
	}
	assertBound(t, MustLookup(t, b, "alice", "bob"), map[string][]string{"alice": {"node-a"}})
	if MustLease(t, b, nodeA2, time.Minute) {
		t.Fatal("purge of the old incarnation removed the new lease")
	}
}

func bindingsPurge(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, time.Minute)
	MustLease(t, b, nodeB, time.Minute)
	users := make([]string, 250)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	MustBind(t, b, nodeA, users...)
	MustBind(t, b, nodeB, users[:10]...)
	if err := b.Unbind(ctxT(t), nodeA, users[:50]); err != nil {
		t.Fatal(err)
	}
	n, err := b.Purge(ctxT(t), nodeA)
	if err != nil {
		t.Fatalf("purge: %v", err)
	}
	if n != 200 {
		t.Fatalf("purge removed %d bindings, want 200", n)
	}
	got := MustLookup(t, b, users...)
	want := map[string][]string{}
	for _, u := range users[:10] {
		want[u] = []string{"node-b"}
	}
	assertBound(t, got, want)
	if n, err := b.Purge(ctxT(t), nodeA); err != nil || n != 0 {
		t.Fatalf("second purge: %d, %v", n, err)
	}
	if !MustLease(t, b, nodeA, time.Minute) {
		t.Fatal("purge did not remove the lease")
	}
}

func bindingsBatch(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, time.Minute)
	MustLease(t, b, nodeB, time.Minute)
	users := make([]string, 3000)
	for i := range users {
		users[i] = fmt.Sprintf("batch-%d", i)
	}
	MustBind(t, b, nodeA, users[:2000]...)
	MustBind(t, b, nodeB, users[1000:2500]...)
	got := MustLookup(t, b, users...)
	want := map[string][]string{}
	for i, u := range users {
		switch {
		case i < 1000:
			want[u] = []string{"node-a"}
		case i < 2000:
			want[u] = []string{"node-a", "node-b"}
		case i < 2500:
			want[u] = []string{"node-b"}
		}
	}
	assertBound(t, got, want)
}

func bindingsConcurrent(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	MustLease(t, b, nodeA, time.Minute)
	MustLease(t, b, nodeB, time.Minute)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodeA
			if w%2 == 1 {
				n = nodeB
			}
			for i := 0; i < 50; i++ {
				u := fmt.Sprintf("c%d-%d", w/2, i)
				if err := b.Bind(ctxT(t), n, []string{u, "shared"}); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					if err := b.Unbind(ctxT(t), n, []string{u}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	got := MustLookup(t, b, "shared", "c0-0", "c0-1", "c1-1", "c3-49")
	assertBound(t, got, map[string][]string{
		"shared": {"node-a", "node-b"},
		"c0-1":   {"node-a", "node-b"},
		"c1-1":   {"node-a", "node-b"},
		"c3-49":  {"node-a", "node-b"},
	})
}

func bindingsValidates(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	if err := b.Bind(ctxT(t), nodeA, []string{""}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("bind empty user = %v, want ErrInvalid", err)
	}
	if err := b.Bind(ctxT(t), storage.Node{}, []string{"a"}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("bind to empty node = %v, want ErrInvalid", err)
	}
	if _, err := b.Lease(ctxT(t), nodeA, 0); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("lease with zero ttl = %v, want ErrInvalid", err)
	}
	if _, err := b.Lookup(ctxT(t), []string{"ok", "bad\nuser"}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("lookup of an invalid user = %v, want ErrInvalid", err)
	}
	if err := b.Ping(ctxT(t)); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func bindingsClosed(t *testing.T, f BindingsFactory) {
	b := f.New(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = b.Close() // idempotent; error allowed
	if _, err := b.Lookup(ctxT(t), []string{"a"}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("lookup after close = %v, want ErrClosed", err)
	}
	if err := b.Bind(ctxT(t), nodeA, []string{"a"}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("bind after close = %v, want ErrClosed", err)
	}
	if err := b.Unbind(ctxT(t), nodeA, []string{"a"}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("unbind after close = %v, want ErrClosed", err)
	}
	if _, err := b.Lease(ctxT(t), nodeA, time.Minute); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("lease after close = %v, want ErrClosed", err)
	}
	if _, err := b.Purge(ctxT(t), nodeA); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("purge after close = %v, want ErrClosed", err)
	}
	if err := b.Ping(ctxT(t)); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("ping after close = %v, want ErrClosed", err)
	}
}

func bindingsServerGone(t *testing.T, f BindingsFactory) {
	b, srv := f.NewOnOwnServer(t)
	MustLease(t, b, nodeA, time.Minute)
	MustBind(t, b, nodeA, "alice")
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Lookup(ctx, []string{"alice"}); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("lookup with server gone = %v, want ErrUnavailable", err)
	}
	if err := b.Bind(ctx, nodeA, []string{"bob"}); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("bind with server gone = %v, want ErrUnavailable", err)
	}
	if _, err := b.Lease(ctx, nodeA, time.Minute); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("lease with server gone = %v, want ErrUnavailable", err)
	}
	if ctx.Err() != nil {
		t.Fatal("calls did not fail fast")
	}
	// The server comes back empty; the client reconnects by itself and the
	// next lease says fresh, which tells the node to bind everyone again.
	srv.Start()
	var fresh bool
	Eventually(t, 30*time.Second, func() error {
		var err error
		fresh, err = b.Lease(ctxT(t), nodeA, time.Minute)
		return err
	})
	if !fresh {
		t.Fatal("lease on a restarted empty server not reported fresh")
	}
	MustBind(t, b, nodeA, "alice")
	assertBound(t, MustLookup(t, b, "alice"), map[string][]string{"alice": {"node-a"}})
}
