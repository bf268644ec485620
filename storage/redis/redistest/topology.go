package redistest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Topology is a set of redis-server processes that together form a Redis
// Cluster or a Sentinel deployment, for tests of a client's topology
// support. Its processes are killed in t.Cleanup.
type Topology struct {
	url   string
	addrs []string
}

// URL returns the Herald storage/redis URL of the topology: every node as
// addr= for a cluster, the sentinel and master_name for Sentinel.
func (tp *Topology) URL() string { return tp.url }

// Addrs returns the cluster nodes' addresses, or the master's and the
// sentinel's.
func (tp *Topology) Addrs() []string { return tp.addrs }

// StartCluster starts a Redis Cluster of masters nodes (at least one, no
// replicas), splits the hash slots among them and waits until every node
// reports the cluster ok.
func StartCluster(t testing.TB, masters int) *Topology {
	t.Helper()
	if masters < 1 {
		t.Fatalf("redistest: a cluster of %d masters", masters)
	}
	procs := make([]*process, masters)
	buses := make([]int, masters) // cluster bus ports
	for i := range procs {
		procs[i] = startOwn(t, t.TempDir(), func(int) ([]string, error) {
			bus, err := freePort()
			if err != nil {
				return nil, err
			}
			buses[i] = bus
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", "5000",
			}, nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	clients := make([]*goredis.Client, masters)
	for i, p := range procs {
		clients[i] = goredis.NewClient(&goredis.Options{Addr: p.addr, MaxRetries: -1})
		defer clients[i].Close()
	}
	for i, c := range clients {
		first, last := i*clusterSlots/masters, (i+1)*clusterSlots/masters-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			t.Fatalf("redistest: cluster node %s: add slots: %v", procs[i].addr, err)
		}
		if i > 0 {
			if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", procs[i].port, buses[i]).Err(); err != nil {
				t.Fatalf("redistest: cluster meet %s: %v", procs[i].addr, err)
			}
		}
	}
	want := fmt.Sprintf("cluster_known_nodes:%d", masters)
	poll(t, ctx, "cluster ok", func() error {
		for i, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, want) {
				return fmt.Errorf("node %s: %s", procs[i].addr, strings.Join(strings.Fields(info)[:3], " "))
			}
		}
		return nil
	})
	tp := &Topology{}
	q := url.Values{}
	for _, p := range procs {
		tp.addrs = append(tp.addrs, p.addr)
		q.Add("addr", p.addr)
	}
	q.Set("cluster", "true")
	tp.url = "redis://?" + q.Encode()
	return tp
}

// SentinelMaster is the master name StartSentinel monitors.
const SentinelMaster = "herald"

// StartSentinel starts a master and one sentinel that monitors it as
// [SentinelMaster], and waits until the sentinel names the master.
func StartSentinel(t testing.TB) *Topology {
	t.Helper()
	master := startOwn(t, t.TempDir(), nil)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	sentinel := startOwn(t, dir, func(int) ([]string, error) {
		// Sentinel rewrites its configuration file, so it needs one.
		text := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n", SentinelMaster, master.port)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		return []string{conf, "--sentinel"}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c := goredis.NewSentinelClient(&goredis.Options{Addr: sentinel.addr, MaxRetries: -1})
	defer c.Close()
	poll(t, ctx, "sentinel knows the master", func() error {
		addr, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		if len(addr) != 2 || addr[1] != strconv.Itoa(master.port) {
			return fmt.Errorf("master at %v", addr)
		}
		return nil
	})
	return &Topology{
		url:   "redis://" + sentinel.addr + "?master_name=" + SentinelMaster,
		addrs: []string{master.addr, sentinel.addr},
	}
}

// poll calls cond with a short growing interval until it returns nil or ctx
// ends, and then fails t.
func poll(t testing.TB, ctx context.Context, what string, cond func() error) {
	t.Helper()
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("redistest: %s: not within %v: %v", what, readyTimeout, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}
