package mongo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodriver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/mongo/mongotest"
	"github.com/heraldpush/herald/storage/storagetest"
)

// indexes lists the indexes of cfg's collection, by name, with a second
// client: what an operator would see.
func indexes(t testing.TB, uri, database, collection string) (map[string]bson.M, error) {
	t.Helper()
	c, err := mongodriver.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Disconnect(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := c.Database(database).Collection(collection).Indexes().List(ctx)
	if err != nil {
		return nil, err
	}
	var all []bson.M
	if err := cur.All(ctx, &all); err != nil {
		return nil, err
	}
	out := make(map[string]bson.M, len(all))
	for _, ix := range all {
		out[ix["name"].(string)] = ix
	}
	return out, nil
}

func checkIndexes(t testing.TB, got map[string]bson.M) {
	t.Helper()
	want := map[string]string{"_id_": "_id", "to_1__id_1": "to,_id", "k_1": "k", "ex_1": "ex"}
	for name, fields := range want {
		ix, ok := got[name]
		if !ok {
			t.Fatalf("index %s missing; have %v", name, got)
		}
		if k := fieldsOf(ix); k != fields {
			t.Errorf("index %s on %s, want %s", name, k, fields)
		}
	}
	if u, _ := got["k_1"]["unique"].(bool); !u {
		t.Errorf("index k_1 is not unique: %v", got["k_1"])
	}
}

func fieldsOf(ix bson.M) string {
	var s string
	for _, e := range ix["key"].(bson.D) {
		if s != "" {
			s += ","
		}
		s += e.Key
	}
	return s
}

func TestIndexesCreatedByNew(t *testing.T) {
	t.Parallel()
	srv := mongotest.Shared(t)
	cfg := testConfig(t, srv.URI(), srv.Database(t))
	cfg.TTLIndex = true // created where the server accepts it, a plain index where not
	open(t, cfg)
	got, err := indexes(t, srv.URI(), cfg.Database, cfg.Collection)
	if err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, got)
	// Opening again on the same collection is a no-op for the indexes.
	open(t, cfg)
}

// Herald starts while MongoDB is down: New succeeds, calls fail fast with
// ErrUnavailable, and once MongoDB is up the store creates its indexes and
// works without being reopened.
func TestStartWhileServerDown(t *testing.T) {
	t.Parallel()
	srv := mongotest.Start(t)
	srv.Stop()
	cfg := testConfig(t, srv.URI(), "herald")

	start := time.Now()
	s := open(t, cfg)
	if d := time.Since(start); d > cfg.OperationTimeout+time.Second {
		t.Errorf("New took %v with the server down", d)
	}
	g := storagetest.NewGen()
	m := g.Msg(time.Hour, "alice")
	m.Key = "first"
	if _, err := s.Append(ctxT(t), m); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("append while down: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctxT(t)); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("ping while down: %v, want ErrUnavailable", err)
	}
	if _, err := s.Get(ctxT(t), m.ID); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("get while down: %v, want ErrUnavailable", err)
	}

	srv.Start()
	storagetest.Eventually(t, 30*time.Second, func() error { return s.Ping(ctxT(t)) })
	got, err := indexes(t, srv.URI(), cfg.Database, cfg.Collection)
	if err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, got)
	storagetest.MustAppend(t, s, m)
	dup := g.Msg(time.Hour, "alice")
	dup.Key = "first"
	if _, err := s.Append(ctxT(t), dup); !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("idempotency after recovery: %v, want ErrDuplicate", err)
	}
}

// Replay on a store whose server went away and came back, with a message
// appended on each side of the outage.
func TestRecoversAfterRestart(t *testing.T) {
	t.Parallel()
	srv := mongotest.Start(t)
	s := open(t, testConfig(t, srv.URI(), "herald"))
	g := storagetest.NewGen()
	before := g.Msg(time.Hour, "alice")
	storagetest.MustAppend(t, s, before)
	srv.Stop()
	if _, _, err := s.Replay(ctxT(t), storage.ReplayQuery{User: "alice", Limit: 10}); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("replay while down: %v", err)
	}
	srv.Start()
	after := g.Msg(time.Hour, "alice")
	storagetest.Eventually(t, 30*time.Second, func() error {
		_, err := s.Append(ctxT(t), after)
		return err
	})
	got := storagetest.ReplayAll(t, s, "alice", "", 10)
	if len(got) != 2 || got[0].ID != before.ID || got[1].ID != after.ID {
		t.Fatalf("replay after restart: %v", got)
	}
}
