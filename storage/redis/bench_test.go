package redis

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/redis/redistest"
	"github.com/heraldpush/herald/storage/storagetest"
)

func benchBindings(b *testing.B, tweak func(*Config)) *Bindings {
	cfg := testConfig(redistest.Shared(b).URL())
	tweak(&cfg)
	return mustNew(b, cfg)
}

func BenchmarkLookup_1000Users(b *testing.B) {
	storagetest.BenchLookup1000(b, benchBindings(b, func(*Config) {}))
}

// Every Lookup also reads the node's lease from Redis: one more round trip.
func BenchmarkLookup_1000Users_NoLeaseCache(b *testing.B) {
	storagetest.BenchLookup1000(b, benchBindings(b, func(c *Config) { c.LeaseCacheTTL = 0 }))
}

// BenchmarkBind_1000Users binds the same 1,000 users again and again, as
// a node's periodic re-bind does.
func BenchmarkBind_1000Users(b *testing.B) {
	storagetest.BenchBind1000(b, benchBindings(b, func(*Config) {}))
}

// BenchmarkLease measures one lease renewal, a node's only periodic
// per-node cost.
func BenchmarkLease(b *testing.B) {
	s := benchBindings(b, func(*Config) {})
	ctx := context.Background()
	n := storage.Node{ID: "bench", Incarnation: "1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Lease(ctx, n, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
