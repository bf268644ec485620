package redis

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/redis/redistest"
	"github.com/heraldpush/herald/storage/storagetest"
)

// testConfig is DefaultConfig on url with a key prefix of its own and a
// key TTL short enough that keys left on an external server go away.
//
// The pool is larger than the dial failures any test provokes: after
// PoolSize failed dials go-redis starts a redial goroutine that looks at
// its pool only once a second, so it may outlive Close by a second, and
// goleak (TestMain) would rightly see it.
func testConfig(url string) Config {
	cfg := DefaultConfig()
	cfg.URL = url
	cfg.KeyPrefix = redistest.UniquePrefix()
	cfg.KeyTTL = 10 * time.Minute
	cfg.PoolSize = 64
	return cfg
}

func mustNew(t testing.TB, cfg Config) *Bindings {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

// factory runs the suite with cfg changed by tweak.
func factory(tweak func(*Config)) storagetest.BindingsFactory {
	return storagetest.BindingsFactory{
		New: func(t testing.TB) storage.Bindings {
			cfg := testConfig(redistest.Shared(t).URL())
			tweak(&cfg)
			return mustNew(t, cfg)
		},
		NewOnOwnServer: func(t testing.TB) (storage.Bindings, *storagetest.Server) {
			srv := redistest.Start(t)
			cfg := testConfig(srv.URL())
			tweak(&cfg)
			return mustNew(t, cfg), &storagetest.Server{Stop: srv.Stop, Start: srv.Start}
		},
	}
}

func TestBindings(t *testing.T) {
	t.Parallel()
	storagetest.RunBindings(t, factory(func(*Config) {}))
}

// The suite must pass whatever the lease cache does: off, and so long that
// only its own rules (never past the lease's TTL, updated by this client's
// Lease and Purge, only "alive" answers) keep it right.
func TestBindingsNoLeaseCache(t *testing.T) {
	t.Parallel()
	storagetest.RunBindings(t, factory(func(c *Config) { c.LeaseCacheTTL = 0 }))
}

func TestBindingsLongLeaseCache(t *testing.T) {
	t.Parallel()
	storagetest.RunBindings(t, factory(func(c *Config) { c.LeaseCacheTTL = time.Hour }))
}

// Batches of 7 make every call cross batch (and SSCAN page) boundaries.
func TestBindingsSmallBatches(t *testing.T) {
	t.Parallel()
	storagetest.RunBindings(t, factory(func(c *Config) { c.LookupBatch = 7 }))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A server that lost its script cache (here by SCRIPT FLUSH; a restart or a
// failover does the same) answers NOSCRIPT to pipelined EVALSHAs; every
// operation must still work.
func TestScriptFlush(t *testing.T) {
	t.Parallel()
	srv := redistest.Shared(t)
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	var logs syncBuffer
	cfg := testConfig(srv.URL())
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	b := mustNew(t, cfg)
	ctx := ctxT(t)
	n := storage.Node{ID: "flush", Incarnation: "1"}
	flush := func() {
		t.Helper()
		if err := admin.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
	}

	flush()
	if fresh := storagetest.MustLease(t, b, n, time.Minute); !fresh {
		t.Fatal("first lease not fresh")
	}
	flush()
	storagetest.MustBind(t, b, n, "alice", "bob", "carol")
	if !strings.Contains(logs.String(), "script cache") {
		t.Fatalf("NOSCRIPT recovery not exercised; log: %q", logs.String())
	}
	got := storagetest.MustLookup(t, b, "alice", "bob", "carol")
	if len(got) != 3 {
		t.Fatalf("lookup after flush: %v", got)
	}
	flush()
	if err := b.Unbind(ctx, n, []string{"alice"}); err != nil {
		t.Fatalf("unbind after flush: %v", err)
	}
	if got := storagetest.MustLookup(t, b, "alice", "bob"); len(got) != 1 || got["bob"] == nil {
		t.Fatalf("lookup after unbind: %v", got)
	}
	flush()
	removed, err := b.Purge(ctx, n)
	if err != nil || removed != 2 {
		t.Fatalf("purge after flush = %d, %v; want 2", removed, err)
	}
}

// Every key a Bind writes has a TTL: a node that dies leaves nothing
// behind for longer than KeyTTL.
func TestKeysHaveTTL(t *testing.T) {
	t.Parallel()
	srv := redistest.Shared(t)
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	cfg := testConfig(srv.URL())
	b := mustNew(t, cfg)
	ctx := ctxT(t)
	n := storage.Node{ID: "ttl{x}%", Incarnation: "7"}
	storagetest.MustLease(t, b, n, 10*time.Second)
	storagetest.MustBind(t, b, n, "alice", "b}o{b")

	keys, err := admin.Keys(ctx, cfg.KeyPrefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{
		cfg.KeyPrefix + "b:{alice}":             cfg.KeyTTL,
		cfg.KeyPrefix + "b:{b}o{b}":             cfg.KeyTTL,
		cfg.KeyPrefix + "n:{ttl%7Bx%7D%25}:7":   cfg.KeyTTL,
		cfg.KeyPrefix + "lease:{ttl%7Bx%7D%25}": 10 * time.Second,
	}
	if len(keys) != len(want) {
		t.Fatalf("keys %q, want %d of them", keys, len(want))
	}
	for key, ttl := range want {
		got, err := admin.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got <= ttl-time.Minute/10 || got > ttl {
			t.Errorf("%s: TTL %v, want about %v", key, got, ttl)
		}
	}
}

// A lease that another process releases stays visible through this
// client's lease cache for at most LeaseCacheTTL.
func TestLeaseCacheBound(t *testing.T) {
	t.Parallel()
	srv := redistest.Shared(t)
	cfg := testConfig(srv.URL())
	cfg.LeaseCacheTTL = 300 * time.Millisecond
	writer, reader := mustNew(t, cfg), mustNew(t, cfg)
	n := storage.Node{ID: "cached", Incarnation: "1"}
	storagetest.MustLease(t, writer, n, time.Minute)
	storagetest.MustBind(t, writer, n, "alice")
	if got := storagetest.MustLookup(t, reader, "alice"); len(got["alice"]) != 1 {
		t.Fatalf("lookup: %v", got)
	}
	purged := time.Now()
	if _, err := writer.Purge(ctxT(t), n); err != nil {
		t.Fatal(err)
	}
	// The binding is gone too, so bind it again behind the purge's back
	// to see what the cache alone decides.
	storagetest.MustBind(t, writer, n, "alice")
	storagetest.Eventually(t, 5*time.Second, func() error {
		if got := storagetest.MustLookup(t, reader, "alice"); len(got) != 0 {
			return errors.New("purged node still returned")
		}
		return nil
	})
	if d := time.Since(purged); d > cfg.LeaseCacheTTL+time.Second {
		t.Fatalf("purged node returned for %v, cache TTL %v", d, cfg.LeaseCacheTTL)
	}
	// The writer's own purge is never hidden by its cache.
	if got := storagetest.MustLookup(t, writer, "alice"); len(got) != 0 {
		t.Fatalf("writer sees its purged node: %v", got)
	}
}

// With Redis unreachable every call fails fast with ErrUnavailable, and a
// caller's cancelled context is still recognisable.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	srv.Stop()
	cfg := testConfig(srv.URL())
	b := mustNew(t, cfg)
	n := storage.Node{ID: "gone", Incarnation: "1"}
	ctx := ctxT(t)
	start := time.Now()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s = %v, want ErrUnavailable", op, err)
		}
	}
	_, err := b.Lease(ctx, n, time.Second)
	check("lease", err)
	check("bind", b.Bind(ctx, n, []string{"a"}))
	check("unbind", b.Unbind(ctx, n, []string{"a"}))
	_, err = b.Lookup(ctx, []string{"a"})
	check("lookup", err)
	_, err = b.Purge(ctx, n)
	check("purge", err)
	check("ping", b.Ping(ctx))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("six calls took %v", d)
	} else {
		t.Logf("six calls against a stopped server took %v", d)
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.Lookup(cancelled, []string{"a"})
	if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("lookup with cancelled context = %v, want ErrUnavailable and context.Canceled", err)
	}
}

func TestCloseAndOwnership(t *testing.T) {
	t.Parallel()
	srv := redistest.Shared(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	cfg := testConfig("")
	b, err := NewFromClient(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	n := storage.Node{ID: "x", Incarnation: "1"}
	if _, err := b.Lease(ctxT(t), n, time.Second); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("lease after close = %v", err)
	}
	if err := b.Unbind(ctxT(t), n, nil); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("unbind after close = %v", err)
	}
	if _, err := b.Purge(ctxT(t), n); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("purge after close = %v", err)
	}
	if err := b.Ping(ctxT(t)); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("ping after close = %v", err)
	}
	// NewFromClient's caller still owns the client.
	if err := client.Ping(ctxT(t)).Err(); err != nil {
		t.Errorf("client closed by Close: %v", err)
	}

	if _, err := NewFromClient(nil, cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewFromClient(nil) = %v", err)
	}
	if _, err := New(testConfig("")); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without URL = %v", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	b := mustNew(t, testConfig(redistest.Shared(t).URL()))
	ctx := ctxT(t)
	n := storage.Node{ID: "v", Incarnation: "1"}
	for name, err := range map[string]error{
		"unbind without incarnation": b.Unbind(ctx, storage.Node{ID: "v"}, []string{"a"}),
		"unbind reserved user":       b.Unbind(ctx, n, []string{"*"}),
		"bind control character":     b.Bind(ctx, n, []string{"a", "b\n"}),
		"lookup empty user":          func() error { _, err := b.Lookup(ctx, []string{"a", ""}); return err }(),
		"purge without id":           func() error { _, err := b.Purge(ctx, storage.Node{Incarnation: "1"}); return err }(),
		"lease negative ttl":         func() error { _, err := b.Lease(ctx, n, -time.Second); return err }(),
	} {
		if !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("%s = %v, want ErrInvalid", name, err)
		}
	}
	// A rejected Bind writes nothing, not even the valid users before the
	// bad one.
	storagetest.MustLease(t, b, n, time.Minute)
	if got := storagetest.MustLookup(t, b, "a"); len(got) != 0 {
		t.Fatalf("rejected bind wrote %v", got)
	}
}

func TestServerTime(t *testing.T) {
	t.Parallel()
	b := mustNew(t, testConfig(redistest.Shared(t).URL()))
	got, err := b.ServerTime(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(got); d > 5*time.Second || d < -5*time.Second {
		t.Fatalf("server time %v is %v from ours (same machine)", got, d)
	}
}
