package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// socketConfig is a fast config on real loopback sockets with a free port.
func socketConfig(id string, secret string, seeds ...string) Config {
	c := fastConfig(id, "a")
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.Seeds = seeds
	c.ClusterSecret = []byte(secret)
	return c
}

func TestSocketCluster(t *testing.T) {
	t.Parallel()
	a := startNode(t, socketConfig("1", "s3cret"))
	if a.g.Addr() == "" || a.g.Addr() == "127.0.0.1:0" {
		t.Fatalf("Addr() = %q", a.g.Addr())
	}
	b := startNode(t, socketConfig("2", "s3cret", a.g.Addr()))
	cfg := socketConfig("3", "s3cret", a.g.Addr(), b.g.Addr())
	cfg.AdvertiseAddr = "127.0.0.1" // advertised with the port bound
	c := startNode(t, cfg)
	nodes := []*tnode{a, b, c}
	waitMembers(t, 5*time.Second, nodeNames(nodes...), nodes...)
	for _, n := range nodes {
		for _, m := range n.g.Members() {
			if want := findNode(nodes, m.NodeName()).g.Addr(); m.Addr != want {
				t.Errorf("%s lists %s at %s, want %s", n.g.Local().NodeName(), m.NodeName(), m.Addr, want)
			}
		}
	}
	// A crash on real sockets is detected too.
	c.stop(t)
	waitMembers(t, 5*time.Second, nodeNames(a, b), a, b)
}

func findNode(nodes []*tnode, name string) *tnode {
	for _, n := range nodes {
		if n.g.Local().NodeName() == name {
			return n
		}
	}
	panic(name)
}

func TestDifferentSecretsDoNotMerge(t *testing.T) {
	t.Parallel()
	a1 := startNode(t, socketConfig("a1", "secret one"))
	a2 := startNode(t, socketConfig("a2", "secret one", a1.g.Addr()))
	waitMembers(t, 5*time.Second, nodeNames(a1, a2), a1, a2)

	// b (another secret) and p (no secret) seed with a1, and a1's rejoin
	// loop tries them back.
	b := startNode(t, socketConfig("b", "secret two", a1.g.Addr(), a2.g.Addr()))
	p := startNode(t, socketConfig("p", "", a1.g.Addr()))
	for _, n := range []*tnode{b, p} {
		failed := n.g.metrics.joins.WithLabelValues("failed")
		eventually(t, 5*time.Second, func() bool { return testutil.ToFloat64(failed) >= 3 },
			func() string {
				return fmt.Sprintf("%s: %v failed joins", n.g.Local().NodeName(), testutil.ToFloat64(failed))
			})
		if ok := testutil.ToFloat64(n.g.metrics.joins.WithLabelValues("ok")); ok != 0 {
			t.Errorf("%s: %v successful joins", n.g.Local().NodeName(), ok)
		}
	}
	waitMembers(t, time.Second, nodeNames(a1, a2), a1, a2)
	waitMembers(t, time.Second, nodeNames(b), b)
	waitMembers(t, time.Second, nodeNames(p), p)
}
