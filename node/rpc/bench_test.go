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

func (c *counter) Deliver(_ context.Context, ds []rpc.Delivery) error {
	if c.n.Add(int64(len(ds))) == c.want {
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
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: m}); err != nil {
			b.Fatal(err)
		}
	}
	<-h.done
	b.StopTimer()
}
