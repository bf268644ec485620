package wsclient

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldpush/herald/node/nodetest"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPoolAgainstHerald drives the pool against a real Herald node:
// connect, receive and count by ID, latency from data.t, ack, and resume
// with since after a dropped connection.
func TestPoolAgainstHerald(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	p, err := New(Config{SourceIPs: []string{"127.0.0.2", "127.0.0.3"}, Ack: true, Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const users = 20
	clients := make([]*Client, users)
	for i := range clients {
		u := fmt.Sprintf("u%d", i)
		clients[i] = p.NewClient(u)
		if err := clients[i].Connect(ctx, n.WSURL(""), n.Token(u), false); err != nil {
			t.Fatalf("connect %s: %v", u, err)
		}
	}
	if got := p.Readies.Load(); got != users {
		t.Fatalf("ready frames = %d, want %d", got, users)
	}
	var ids []string
	for range 3 {
		all := make([]string, users)
		for i := range all {
			all[i] = clients[i].User
		}
		ids = append(ids, n.Send(map[string]any{"t": time.Now().UnixNano()}, all...))
	}
	eventually(t, "every delivery", func() bool { return p.Unique.Load() == 3*users })
	for _, c := range clients {
		got := c.Received()
		for _, id := range ids {
			if got[id] != 1 {
				t.Fatalf("%s received %s %d times, want once (%v)", c.User, id, got[id], got)
			}
		}
	}
	lats := p.Latencies()
	if len(lats) != 3*users {
		t.Fatalf("%d latencies recorded, want %d", len(lats), 3*users)
	}
	for _, l := range lats {
		if l <= 0 || l > int64(30*time.Second) {
			t.Fatalf("latency %v out of range", time.Duration(l))
		}
	}
	if len(p.Latencies()) != 0 {
		t.Fatal("Latencies did not clear the record")
	}

	// A dropped connection resumes from its cursor and gets what it
	// missed; repeats from the replay overlap count as repeats only.
	c := clients[0]
	c.Disconnect()
	if c.Open() {
		t.Fatal("open after Disconnect")
	}
	eventually(t, "the node to see the drop", func() bool { return !n.Edge().Online(c.User) })
	missed := []string{n.Send(map[string]any{"t": time.Now().UnixNano()}, c.User), n.Send(map[string]any{"t": time.Now().UnixNano()}, c.User)}
	if err := c.Connect(ctx, n.WSURL(""), n.Token(c.User), true); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	eventually(t, "the replay", func() bool {
		got := c.Received()
		return got[missed[0]] >= 1 && got[missed[1]] >= 1
	})
	if u := p.Unique.Load(); u != 3*users+2 {
		t.Fatalf("unique = %d, want %d", u, 3*users+2)
	}
	if m := p.Messages.Load(); m < p.Unique.Load() {
		t.Fatalf("messages %d < unique %d", m, p.Unique.Load())
	}
}

// TestConnectFailsOnBadToken checks a refused handshake is an error and
// counted, not a hang.
func TestConnectFailsOnBadToken(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	p, err := New(Config{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	c := p.NewClient("mallory")
	if err := c.Connect(context.Background(), n.WSURL(""), "not-a-token", false); err == nil {
		t.Fatal("connected with a bad token")
	}
	if p.ConnectKO.Load() != 1 || c.Open() {
		t.Fatalf("failed connect not counted: ko=%d open=%v", p.ConnectKO.Load(), c.Open())
	}
}
