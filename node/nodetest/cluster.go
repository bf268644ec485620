package nodetest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/storagetest"
)

// Cluster is a set of real nodes in one test process: each on its own
// loopback address (127.0.0.2, 127.0.0.3, ...) with gossip, internal RPC
// and the public port on free ports, sharing one Redis and one
// MongoDB-wire server. Nodes join through the gossip addresses of the
// nodes already running.
type Cluster struct {
	t      testing.TB
	Secret []byte // JWT secret
	APIKey string
	Mongo  *MongoTarget
	Redis  *RedisTarget
	// ClusterSecret is shared by every node.
	ClusterSecret []byte
	shared        storage.Messages

	mu    sync.Mutex
	nodes []*Node
	ips   map[string]string // node ID -> its loopback address
	next  int
}

// ClusterOptions adjust a cluster. Zero values keep the defaults.
type ClusterOptions struct {
	// Mongo and Redis; fresh ones on the shared servers if nil.
	Mongo *MongoTarget
	Redis *RedisTarget
	// Messages, if set, is one message store all nodes share (in-process)
	// instead of MongoDB: for scenarios too heavy for an in-process
	// FerretDB, which decodes every stored message on every replay.
	Messages storage.Messages
}

// NewCluster prepares an empty cluster; add nodes with AddNode. The test
// binary's TestMain must run through mongotest.RunMain(redistest.Main(m)).
func NewCluster(t testing.TB, o ClusterOptions) *Cluster {
	if o.Mongo == nil {
		o.Mongo = SharedMongo(t)
	}
	if o.Redis == nil {
		o.Redis = SharedRedis(t)
	}
	return &Cluster{t: t, Secret: []byte(randomHex(32)), APIKey: "key-" + randomHex(16),
		ClusterSecret: []byte(randomHex(32)), Mongo: o.Mongo, Redis: o.Redis, shared: o.Messages,
		ips: map[string]string{}, next: 2}
}

// sharedStore lets nodes share one store: Close does nothing (the test
// closes the store).
type sharedStore struct{ storage.Messages }

func (sharedStore) Close() error { return nil }

// NodeOptions adjust one node of a cluster.
type NodeOptions struct {
	// ID of the node; "node-<n>" if empty. Reuse an ID to restart a node.
	ID string
	// Roles; all if empty.
	Roles []node.Role
	// Config edits the configuration last.
	Config func(*node.Config)
}

// AddNode starts a node and returns once it runs (not necessarily once
// the others see it: see Converge).
func (c *Cluster) AddNode(o NodeOptions) *Node {
	c.t.Helper()
	c.mu.Lock()
	ip, ok := c.ips[o.ID]
	if !ok {
		ip = fmt.Sprintf("127.0.0.%d", c.next)
		c.next++
		if o.ID == "" {
			o.ID = fmt.Sprintf("node-%d", c.next-2)
		}
		c.ips[o.ID] = ip
	}
	var seeds []string
	for _, n := range c.nodes {
		if !n.stopped.Load() {
			seeds = append(seeds, n.GossipAddr())
		}
	}
	c.mu.Unlock()

	n := Start(c.t, Options{
		Backend: External, Mongo: c.Mongo, Redis: c.Redis, Secret: c.Secret, APIKey: c.APIKey,
		Config: func(cfg *node.Config) {
			cfg.NodeID = o.ID
			if len(o.Roles) > 0 {
				cfg.Roles = o.Roles
			}
			cfg.Addr = ip + ":0"
			cfg.RPCAddr = ip + ":0"
			cfg.ClusterSecret = c.ClusterSecret
			cfg.Gossip.BindAddr = ip
			cfg.Gossip.BindPort = 0
			cfg.Gossip.Seeds = seeds
			FastGossip(cfg)
			if c.shared != nil {
				cfg.Messages.Close()
				cfg.Messages = sharedStore{c.shared}
			}
			if o.Config != nil {
				o.Config(cfg)
			}
		},
	})
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// FastGossip sets gossip timings for tests: failures are detected in
// about a second, and partitions heal within a second.
func FastGossip(cfg *node.Config) {
	cfg.Gossip.Profile = "local"
	cfg.Gossip.ProbeInterval = 100 * time.Millisecond
	cfg.Gossip.ProbeTimeout = 80 * time.Millisecond
	cfg.Gossip.GossipInterval = 20 * time.Millisecond
	cfg.Gossip.SuspicionMult = 4
	cfg.Gossip.PushPullInterval = time.Second
	cfg.Gossip.RejoinInterval = 500 * time.Millisecond
}

// Nodes returns the nodes that have not been stopped or killed.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.nodes {
		if !n.stopped.Load() {
			out = append(out, n)
		}
	}
	return out
}

// Kill crashes n (no leave, no close frames, no unbinding).
func (c *Cluster) Kill(n *Node) {
	n.stopped.Store(true)
	n.Kill()
}

// Converge waits until every running node sees exactly the running nodes
// as members, running (not draining).
func (c *Cluster) Converge() {
	c.t.Helper()
	storagetest.Eventually(c.t, 30*time.Second, func() error {
		nodes := c.Nodes()
		var want []string
		for _, n := range nodes {
			want = append(want, n.ID().String())
		}
		sort.Strings(want)
		for _, n := range nodes {
			var got []string
			for _, m := range n.Members() {
				if m.State == "running" {
					got = append(got, m.ID+"/"+m.Incarnation)
				}
			}
			sort.Strings(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s sees %v, want %v", n.ID(), got, want)
			}
		}
		return nil
	})
}

// Route asks n which node owns user.
func (c *Cluster) Route(n *Node, user string) (nodeID, url string) {
	c.t.Helper()
	r := n.Get("/v1/route?user=" + user)
	if r.Status != 200 {
		c.t.Fatalf("route %s: %d %s", user, r.Status, r.Body)
	}
	var v struct{ Node, URL string }
	decode(c.t, r.Body, &v)
	return v.Node, v.URL
}

// ByID returns the running node with id.
func (c *Cluster) ByID(id string) *Node {
	for _, n := range c.Nodes() {
		if n.ID().ID == id {
			return n
		}
	}
	c.t.Fatalf("no running node %s", id)
	return nil
}

// Owned returns a user ID whose ring owner is the node with id, trying
// prefix0, prefix1, ...
func (c *Cluster) Owned(n *Node, id, prefix string) string {
	c.t.Helper()
	for i := range 10000 {
		u := fmt.Sprintf("%s%d", prefix, i)
		if owner, _ := c.Route(n, u); owner == id {
			return u
		}
	}
	c.t.Fatalf("no user with prefix %s is owned by %s", prefix, id)
	return ""
}

// token mints a token for user with the cluster's secret.
func (c *Cluster) token(user string) string {
	tok, err := auth.Mint(c.Secret, user, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func newRequest(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}
