package mongo

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/mongo/mongotest"
	"github.com/heraldpush/herald/storage/storagetest"
)

// DeleteExpired works through several batches, oldest expiry first, and
// leaves live messages alone.
func TestDeleteExpiredBatches(t *testing.T) {
	t.Parallel()
	srv := mongotest.Shared(t)
	cfg := DefaultConfig()
	cfg.URI, cfg.Database = srv.URI(), srv.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	s.sweepBatch = 4

	g := storagetest.NewGen()
	const expired = 11
	base := time.Now().Add(-time.Hour)
	for i := range expired {
		m := g.Expired("bob")
		m.CreatedAt = base
		m.ExpiresAt = base.Add(time.Duration(i%3) * time.Minute) // ties across batch edges
		storagetest.MustAppend(t, s, m)
	}
	live := g.Msg(time.Hour, "bob")
	storagetest.MustAppend(t, s, live)
	if n, err := s.DeleteExpired(ctx, time.Now()); err != nil || n != expired {
		t.Fatalf("delete expired: %d, %v; want %d", n, err, expired)
	}
	if got := storagetest.ReplayAll(t, s, "bob", "", 100); len(got) != 1 || got[0].ID != live.ID {
		t.Fatalf("after sweep: %v", got)
	}
	if _, err := s.Get(ctx, live.ID); err != nil {
		t.Fatalf("live message swept: %v", err)
	}
	var _ storage.Messages = s
}
