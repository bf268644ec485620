package mongotest_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/heraldpush/herald/storage/mongo/mongotest"
)

func TestMain(m *testing.M) { os.Exit(mongotest.RunMain(m)) }

func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(time.Second).
		SetConnectTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStopStart(t *testing.T) {
	t.Parallel()
	srv := mongotest.Start(t)
	c := connect(t, srv.URI())
	coll := c.Database(srv.Database(t)).Collection("c")
	if _, err := coll.InsertOne(ctxT(t), bson.D{{Key: "_id", Value: "kept"}}); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	srv.Stop() // idempotent
	addr := srv.URI()[len("mongodb://") : len(srv.URI())-1]
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = conn.Close()
		t.Fatalf("port %s still answers after Stop", addr)
	}
	// The open pooled connection was cut: the client fails, and fast.
	if err := c.Ping(ctxT(t), nil); err == nil {
		t.Fatal("ping succeeded with the server stopped")
	}

	srv.Start()
	srv.Start() // no-op while running
	var got bson.M
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := coll.FindOne(ctxT(t), bson.D{{Key: "_id", Value: "kept"}}).Decode(&got)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("data not back after restart: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShared(t *testing.T) {
	t.Parallel()
	srv := mongotest.Shared(t)
	if again := mongotest.Shared(t); again.URI() != srv.URI() {
		t.Fatalf("two shared servers: %s and %s", srv.URI(), again.URI())
	}
	a, b := srv.Database(t), srv.Database(t)
	if a == b || len(a) > 63 {
		t.Fatalf("database names %q and %q", a, b)
	}
	if err := connect(t, srv.URI()).Ping(ctxT(t), nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Stop on the shared server did not panic")
		}
	}()
	srv.Stop()
}

func TestDatabaseNameFitsLongTestNames(t *testing.T) {
	t.Parallel()
	t.Run("a_rather_long_subtest_name_that_goes_on_and_on_and_on_with_ünïcödé/and/more", func(t *testing.T) {
		name := mongotest.Shared(t).Database(t)
		if len(name) > 63 {
			t.Fatalf("%q: %d bytes", name, len(name))
		}
		for _, r := range name {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
				t.Fatalf("%q has %q", name, r)
			}
		}
	})
}
