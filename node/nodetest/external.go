package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage/mongo"
	"github.com/heraldpush/herald/storage/mongo/mongotest"
	"github.com/heraldpush/herald/storage/redis"
	"github.com/heraldpush/herald/storage/redis/redistest"
)

// MongoTarget is a database on a MongoDB-wire server.
type MongoTarget struct {
	URI      string
	Database string
	Server   *mongotest.Server
}

// SharedMongo returns a fresh database on the test binary's shared server.
func SharedMongo(t testing.TB) *MongoTarget {
	srv := mongotest.Shared(t)
	return &MongoTarget{URI: srv.URI(), Database: srv.Database(t), Server: srv}
}

// OwnMongo starts a server for this test alone (so the test may stop it).
func OwnMongo(t testing.TB) *MongoTarget {
	srv := mongotest.Start(t)
	return &MongoTarget{URI: srv.URI(), Database: "herald", Server: srv}
}

// Open opens the message store on the target, with timeouts short enough
// for outage tests.
func (m *MongoTarget) Open(t testing.TB) *mongo.Messages {
	t.Helper()
	cfg := mongo.DefaultConfig()
	cfg.URI, cfg.Database = m.URI, m.Database
	// A stopped server is found out fast; a slow one (FerretDB under -race,
	// shared by parallel tests) is waited for, not taken for an outage.
	cfg.ServerSelectionTimeout, cfg.ConnectTimeout = time.Second, time.Second
	cfg.OperationTimeout = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := mongo.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// RedisTarget is a key prefix on a Redis server.
type RedisTarget struct {
	URL    string
	Prefix string
	Server *redistest.Server
	// KeyTTL overrides the binding keys' TTL (default 24h).
	KeyTTL time.Duration
}

// SharedRedis returns a fresh key prefix on the test binary's shared
// server.
func SharedRedis(t testing.TB) *RedisTarget {
	srv := redistest.Shared(t)
	return &RedisTarget{URL: srv.URL(), Prefix: redistest.UniquePrefix(), Server: srv}
}

// OwnRedis starts a redis-server for this test alone.
func OwnRedis(t testing.TB) *RedisTarget {
	srv := redistest.Start(t)
	return &RedisTarget{URL: srv.URL(), Prefix: "herald:", Server: srv}
}

// Open opens the binding store on the target.
func (r *RedisTarget) Open(t testing.TB) *redis.Bindings {
	t.Helper()
	cfg := redis.DefaultConfig()
	cfg.URL, cfg.KeyPrefix = r.URL, r.Prefix
	if r.KeyTTL > 0 {
		cfg.KeyTTL = r.KeyTTL
	}
	b, err := redis.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
