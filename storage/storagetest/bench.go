package storagetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
)

// The benchmarks report allocations with b.ReportAllocs. For a backend
// whose server runs in the test process (the embedded FerretDB) they
// include the server's own, so compare them only within one backend.

// BenchAppend1000Recipients measures appending one message addressed to
// 1,000 users.
func BenchAppend1000Recipients(b *testing.B, s storage.Messages) {
	ctx := context.Background()
	users := benchUsers(1000)
	g := NewGen()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Append(ctx, g.Msg(time.Hour, users...)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchAppend1Recipient measures appending one single-recipient message,
// from b.RunParallel's goroutines so a backend that batches shows it.
func BenchAppend1Recipient(b *testing.B, s storage.Messages) {
	ctx := context.Background()
	g := NewGen()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(ctx, g.Msg(time.Hour, "bench-user")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchReplay100 measures replaying 100 messages for one user out of a
// store that holds messages for 100 users.
func BenchReplay100(b *testing.B, s storage.Messages) {
	ctx := context.Background()
	g := NewGen()
	var first string
	for i := 0; i < 100; i++ {
		for u := 0; u < 100; u++ {
			m := g.Msg(time.Hour, fmt.Sprintf("replay-user-%d", u))
			if first == "" {
				first = m.ID
			}
			if _, err := s.Append(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, _, err := s.Replay(ctx, storage.ReplayQuery{User: "replay-user-42", Limit: 100})
		if err != nil || len(got) != 100 {
			b.Fatalf("replay: %d, %v", len(got), err)
		}
	}
}

// benchUsers returns n user IDs.
func benchUsers(n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("bench-user-%d", i)
	}
	return users
}

// benchLeased leases a node on s for a benchmark.
func benchLeased(b *testing.B, s storage.Bindings) storage.Node {
	n := storage.Node{ID: "bench", Incarnation: "1"}
	if _, err := s.Lease(context.Background(), n, time.Hour); err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchLookup1000 measures one Lookup of 1,000 bound users.
func BenchLookup1000(b *testing.B, s storage.Bindings) {
	ctx := context.Background()
	n := benchLeased(b, s)
	users := benchUsers(1000)
	if err := s.Bind(ctx, n, users); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := s.Lookup(ctx, users)
		if err != nil || len(got) != len(users) {
			b.Fatalf("lookup: %d users, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/user")
}

// BenchBind1000 measures binding the same 1,000 users again and again, as
// a node's periodic re-bind does.
func BenchBind1000(b *testing.B, s storage.Bindings) {
	ctx := context.Background()
	n := benchLeased(b, s)
	users := benchUsers(1000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.Bind(ctx, n, users); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/user")
}
