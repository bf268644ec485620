package redis

import (
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/redis/redistest"
	"github.com/heraldpush/herald/storage/storagetest"
)

// topologyFactory runs the suite's cases on url, each with a key prefix of
// its own. The server-restart case needs a single server and is left to
// TestBindings.
func topologyFactory(url string) storagetest.BindingsFactory {
	return storagetest.BindingsFactory{
		New: func(t testing.TB) storage.Bindings {
			cfg := testConfig(url)
			cfg.LookupBatch = 100 // several pipelines, each spread over the nodes
			return mustNew(t, cfg)
		},
	}
}

// TestBindingsCluster runs the conformance suite on a three-master Redis
// Cluster: keys of one call live on different nodes, pipelines are split
// by node, and NOSCRIPT comes back from each node separately.
func TestBindingsCluster(t *testing.T) {
	t.Parallel()
	cluster := redistest.StartCluster(t, 3)
	t.Run("Suite", func(t *testing.T) { storagetest.RunBindings(t, topologyFactory(cluster.URL())) })

	t.Run("ScriptFlush", func(t *testing.T) {
		cfg := testConfig(cluster.URL())
		b := mustNew(t, cfg)
		admin := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cluster.Addrs()})
		t.Cleanup(func() { _ = admin.Close() })
		n := storage.Node{ID: "cluster", Incarnation: "1"}
		users := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"}
		storagetest.MustLease(t, b, n, time.Minute)
		storagetest.MustBind(t, b, n, users...)
		if err := admin.ScriptFlush(ctxT(t)).Err(); err != nil {
			t.Fatal(err)
		}
		storagetest.MustBind(t, b, n, "u9")
		if got := storagetest.MustLookup(t, b, append(users, "u9")...); len(got) != 9 {
			t.Fatalf("lookup: %v", got)
		}
		if err := admin.ScriptFlush(ctxT(t)).Err(); err != nil {
			t.Fatal(err)
		}
		if removed, err := b.Purge(ctxT(t), n); err != nil || removed != 9 {
			t.Fatalf("purge = %d, %v; want 9", removed, err)
		}
	})
}

// TestBindingsSentinel runs the conformance suite through a sentinel.
func TestBindingsSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	storagetest.RunBindings(t, topologyFactory(s.URL()))
}
