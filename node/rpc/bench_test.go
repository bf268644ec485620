package rpc_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
)

// counter is a Handler that counts deliveries and says when it has n.
type counter struct {
	recorder
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *counter) Deliver(_ context.Context, b rpc.Batch) error {
	if n := len(b.Deliveries); n > 0 && c.n.Add(int64(n)) == c.want {
		close(c.done)
	}
	return nil
}

// BenchmarkDeliver_1Recipient measures one delivery from Enqueue on the
// dispatch side to the push node's handler, over loopback TCP, with the
// default batching; ns/op is per delivery.
func BenchmarkDeliver_1Recipient(b *testing.B) {
	h := &counter{want: int64(b.N), done: make(chan struct{})}
	srv := startServer(b, h, nil)
	cfg := rpc.DefaultClientConfig()
	cfg.Secret = secret
	cfg.Source = rpc.Source{ID: "bench", Incarnation: "1"}
	c, err := rpc.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close(context.Background()) }()
	p := c.Peer(srv.Addr())
	m := &storage.Message{
		ID:        "0123456789abcdefghjk",
		To:        []string{"user-000042"},
		Data:      json.RawMessage(`{"title":"hello","body":"a notification of a typical size, about a hundred bytes"}`),
		CreatedAt: time.Now(),
		ExpiresAt: time.Now().Add(time.Hour),
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Enqueue never waits: keep what is outstanding under QueueLen, as
		// dispatch's own pace would.
		for int64(i)-h.n.Load() > int64(cfg.QueueLen/2) {
			time.Sleep(50 * time.Microsecond)
		}
		if err := p.Enqueue(rpc.Delivery{Message: m}); err != nil {
			b.Fatal(err)
		}
	}
	<-h.done
	b.StopTimer()
}
