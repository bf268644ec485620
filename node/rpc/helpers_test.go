package rpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("0123456789abcdef0123456789abcdef")

// recorder is a Handler that records what it is given; the hooks, if set,
// run after recording.
type recorder struct {
	mu        sync.Mutex
	batches   [][]rpc.Delivery // those with deliveries
	all       []rpc.Batch      // every batch
	submitted [][]*storage.Message
	cursors   []string     // cursors that came with Submit
	from      []rpc.Source // who submitted

	deliver func(ctx context.Context, ds []rpc.Delivery) error
	submit  func(ctx context.Context, ms []*storage.Message) error
	verify  func(ctx context.Context, token string) (auth.Identity, error)
}

func (r *recorder) Deliver(ctx context.Context, b rpc.Batch) error {
	r.mu.Lock()
	if len(b.Deliveries) > 0 {
		r.batches = append(r.batches, b.Deliveries)
	}
	r.all = append(r.all, b)
	r.mu.Unlock()
	if r.deliver != nil {
		return r.deliver(ctx, b.Deliveries)
	}
	return nil
}

// received returns every batch handled, in order.
func (r *recorder) received() []rpc.Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rpc.Batch(nil), r.all...)
}

func (r *recorder) Submit(ctx context.Context, from rpc.Source, ms []*storage.Message, cursor string) error {
	r.mu.Lock()
	r.submitted = append(r.submitted, ms)
	r.cursors = append(r.cursors, cursor)
	r.from = append(r.from, from)
	r.mu.Unlock()
	if r.submit != nil {
		return r.submit(ctx, ms)
	}
	return nil
}

func (r *recorder) Verify(ctx context.Context, token string) (auth.Identity, error) {
	if r.verify != nil {
		return r.verify(ctx, token)
	}
	return auth.Identity{}, fmt.Errorf("%w: no verifier", auth.ErrInvalidToken)
}

// delivered returns every delivery received, in order, and the number of
// batches they came in.
func (r *recorder) delivered() ([]rpc.Delivery, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []rpc.Delivery
	for _, b := range r.batches {
		all = append(all, b...)
	}
	return all, len(r.batches)
}

func (r *recorder) count() int {
	ds, _ := r.delivered()
	return len(ds)
}

// startServer starts a server on a free loopback port (or addr) and stops
// it at the end of the test.
func startServer(t testing.TB, h rpc.Handler, mod func(*rpc.ServerConfig)) *rpc.Server {
	t.Helper()
	cfg := rpc.DefaultServerConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Secret = secret
	cfg.Handler = h
	if mod != nil {
		mod(&cfg)
	}
	s, err := rpc.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// testClientConfig has short timings for tests.
func testClientConfig() rpc.ClientConfig {
	cfg := rpc.DefaultClientConfig()
	cfg.Secret = secret
	cfg.Source = rpc.Source{ID: "dispatch-1", Incarnation: "inc-1"}
	cfg.QueueLen = 1000
	cfg.BatchMax = 16
	cfg.BatchDelay = 0
	cfg.Window = 4
	cfg.AckTimeout = 3 * time.Second
	cfg.DialTimeout = time.Second
	cfg.MaxBackoff = 50 * time.Millisecond
	return cfg
}

func newClient(t testing.TB, mod func(*rpc.ClientConfig)) *rpc.Client {
	t.Helper()
	cfg := testClientConfig()
	if mod != nil {
		mod(&cfg)
	}
	c, err := rpc.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	return c
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// message i of a varied set: broadcast, one recipient, several, and an
// empty non-nil To; data with odd spacing and escapes that must survive
// byte for byte.
func message(i int) *storage.Message {
	created := time.UnixMilli(1_700_000_000_000 + int64(i))
	m := &storage.Message{
		ID:        fmt.Sprintf("m%06d", i),
		Data:      json.RawMessage(fmt.Sprintf("{ \"n\" : %d,\t\"s\":\"\\u00e9\\\"x\" }", i)),
		CreatedAt: created,
		ExpiresAt: created.Add(time.Hour),
	}
	switch i % 4 {
	case 0:
		m.Broadcast = true
	case 1:
		m.To = []string{"u1"}
	case 2:
		m.To = []string{"alice", "bob", "carol"}
		m.Key = fmt.Sprintf("key-%d", i)
	case 3:
		m.To = []string{}
	}
	return m
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
