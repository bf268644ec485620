package mongo_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/mongo"
	"github.com/heraldpush/herald/storage/mongo/mongotest"
	"github.com/heraldpush/herald/storage/storagetest"
)

func TestMain(m *testing.M) { os.Exit(mongotest.RunMain(m)) }

// configs remembers each store's configuration so Reopen can open the same
// database again.
var configs sync.Map // *mongo.Messages -> mongo.Config

func testConfig(t testing.TB, uri, database string) mongo.Config {
	cfg := mongo.DefaultConfig()
	cfg.URI = uri
	cfg.Database = database
	// Shorter than production so that outage cases finish quickly; still
	// ample for a loopback server under -race.
	cfg.ServerSelectionTimeout = time.Second
	cfg.ConnectTimeout = time.Second
	// No TTL index in the conformance cases: on a real MongoDB its monitor
	// could delete messages the Expiry case expects DeleteExpired to count.
	// TestIndexesCreatedByNew turns it on.
	cfg.TTLIndex = false
	cfg.Logger = slog.New(slog.NewTextHandler(tLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// tLog writes a store's log lines to its test's log.
type tLog struct{ t testing.TB }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func open(t testing.TB, cfg mongo.Config) *mongo.Messages {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := mongo.New(ctx, cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	configs.Store(s, cfg)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func newShared(t testing.TB) *mongo.Messages {
	srv := mongotest.Shared(t)
	return open(t, testConfig(t, srv.URI(), srv.Database(t)))
}

func TestMessages(t *testing.T) {
	t.Parallel()
	storagetest.RunMessages(t, storagetest.MessagesFactory{
		New: func(t testing.TB) storage.Messages { return newShared(t) },
		Reopen: func(t testing.TB, s storage.Messages) storage.Messages {
			cfg, ok := configs.Load(s)
			if !ok {
				t.Fatalf("reopen: unknown store %p", s)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("close before reopen: %v", err)
			}
			return open(t, cfg.(mongo.Config))
		},
		NewOnOwnServer: func(t testing.TB) (storage.Messages, *storagetest.Server) {
			srv := mongotest.Start(t)
			s := open(t, testConfig(t, srv.URI(), "herald"))
			return s, &storagetest.Server{Stop: srv.Stop, Start: srv.Start}
		},
	})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	s := newShared(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Get(ctxT(t), storage.IDAt(time.Now())); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("get: %v", err)
	}
	if _, err := s.DeleteExpired(ctxT(t), time.Now()); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("delete expired: %v", err)
	}
	if err := s.Ping(ctxT(t)); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("ping: %v", err)
	}
}

func TestReplayValidatesUser(t *testing.T) {
	t.Parallel()
	s := newShared(t)
	for _, u := range []string{"", storage.BroadcastUser, "a\nb"} {
		if _, _, err := s.Replay(ctxT(t), storage.ReplayQuery{User: u, Limit: 10}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("replay %q: %v, want ErrInvalid", u, err)
		}
	}
	if _, err := s.Get(ctxT(t), "nope"); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("get bad id: %v, want ErrInvalid", err)
	}
	if _, err := s.Append(ctxT(t), nil); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("append nil: %v, want ErrInvalid", err)
	}
}

// An expired holder of a key is replaced even when the sweeper never ran,
// and an expired message appended again by ID is still its own retry.
func TestExpiredHolderReplaced(t *testing.T) {
	t.Parallel()
	s := newShared(t)
	g := storagetest.NewGen()
	old := g.Expired("alice")
	old.Key = "k"
	storagetest.MustAppend(t, s, old)
	// Retrying the expired message's own ID returns it: same ID, same message.
	if got, err := s.Append(ctxT(t), old); err != nil || got.ID != old.ID {
		t.Fatalf("re-append of expired id: %+v, %v", got, err)
	}
	fresh := g.Msg(time.Hour, "alice")
	fresh.Key = "k"
	storagetest.MustAppend(t, s, fresh)
	if _, err := s.Get(ctxT(t), old.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired holder still readable: %v", err)
	}
	if n, err := s.DeleteExpired(ctxT(t), time.Now()); err != nil || n != 0 {
		t.Fatalf("sweep after replacement: %d, %v; want 0 (the holder was deleted by Append)", n, err)
	}
}

func TestServerTime(t *testing.T) {
	t.Parallel()
	s := newShared(t)
	got, err := s.ServerTime(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(got); d > 5*time.Second || d < -5*time.Second {
		t.Fatalf("server time %v is %v from ours (same machine)", got, d)
	}
}
