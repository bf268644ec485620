package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/node/rpc"
)

func checkDelivery(t *testing.T, i int, got, want rpc.Delivery) {
	t.Helper()
	g, w := got.Message, want.Message
	switch {
	case g.ID != w.ID:
		t.Fatalf("delivery %d: ID %q, want %q", i, g.ID, w.ID)
	case !bytes.Equal(g.Data, w.Data):
		t.Fatalf("delivery %d: data %q, want %q", i, g.Data, w.Data)
	case !g.CreatedAt.Equal(w.CreatedAt) || !g.ExpiresAt.Equal(w.ExpiresAt):
		t.Fatalf("delivery %d: times %v/%v, want %v/%v", i, g.CreatedAt, g.ExpiresAt, w.CreatedAt, w.ExpiresAt)
	case g.Broadcast != w.Broadcast:
		t.Fatalf("delivery %d: broadcast %v, want %v", i, g.Broadcast, w.Broadcast)
	case g.Key != w.Key:
		t.Fatalf("delivery %d: key %q, want %q", i, g.Key, w.Key)
	case got.Hops != want.Hops:
		t.Fatalf("delivery %d: hops %d, want %d", i, got.Hops, want.Hops)
	}
	if len(w.To) == 0 {
		if g.To != nil {
			t.Fatalf("delivery %d: To %#v, want nil", i, g.To)
		}
	} else if !slices.Equal(g.To, w.To) {
		t.Fatalf("delivery %d: To %q, want %q", i, g.To, w.To)
	}
}

func TestDeliverRoundTrip(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	c := newClient(t, func(c *rpc.ClientConfig) { c.QueueLen = 5000 })
	p := c.Peer(srv.Addr())
	if c.Peer(srv.Addr()) != p {
		t.Fatal("Peer made a second peer for one address")
	}
	const n = 3000
	want := make([]rpc.Delivery, n)
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range want {
		want[i] = rpc.Delivery{Message: message(i), Hops: i % 3}
		if err := p.Enqueue(want[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, batches := h.delivered()
	if len(got) != n {
		t.Fatalf("got %d deliveries, want %d", len(got), n)
	}
	for i := range got {
		checkDelivery(t, i, got[i], want[i])
	}
	// One session, announced by the client's source, with no gap.
	sessions := map[uint64]bool{}
	for _, b := range h.received() {
		sessions[b.Session.Number] = true
		if b.Session.Source.ID != "dispatch-1" || b.Session.Source.Incarnation != "inc-1" || b.Session.Prev != 0 ||
			b.Session.GapAll || len(b.Session.GapUsers) > 0 || b.Hole {
			t.Fatalf("batch session %+v (hole %v)", b.Session, b.Hole)
		}
	}
	if len(sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(sessions))
	}
	t.Logf("%d deliveries in %d batches", n, batches)
}

// A cursor reaches the receiver after every delivery queued before it,
// and a cursor alone travels too (an idle peer's heartbeat).
func TestCursorsFollowDeliveries(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	c := newClient(t, func(c *rpc.ClientConfig) { c.BatchMax = 4; c.BatchDelay = 10 * time.Millisecond })
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 10*time.Second)
	cursorAfter := map[string]int{} // cursor -> deliveries queued before it
	queued := 0
	for i := range 30 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
		queued++
		if i%7 == 3 {
			cur := fmt.Sprintf("c%02d", i)
			p.Cursor(cur)
			cursorAfter[cur] = queued
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.Cursor("idle")
	eventually(t, 5*time.Second, "the idle cursor", func() bool {
		b := h.received()
		return len(b) > 0 && b[len(b)-1].Cursor == "idle" && len(b[len(b)-1].Deliveries) == 0
	})
	seen := 0
	got := 0
	for _, b := range h.received() {
		seen += len(b.Deliveries)
		if b.Cursor == "" || b.Cursor == "idle" {
			continue
		}
		got++
		if want := cursorAfter[b.Cursor]; seen != want {
			t.Fatalf("cursor %s arrived after %d deliveries, want exactly the %d queued before it", b.Cursor, seen, want)
		}
	}
	if got != len(cursorAfter) {
		t.Fatalf("%d cursors arrived, want %d", got, len(cursorAfter))
	}
}

// A receiver that stops acking (stuck, deaf to its context) makes the
// client cut the stream and send the unacked batches again on a new one;
// the receiver's handler still sees each delivery once.
func TestAckTimeoutSendsAgainOnce(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var stuck atomic.Bool
	stuck.Store(true)
	h := &recorder{deliver: func(_ context.Context, ds []rpc.Delivery) error {
		if len(ds) > 0 && stuck.CompareAndSwap(true, false) {
			<-release // the first batch of deliveries hangs
		}
		return nil
	}}
	reg := prometheus.NewRegistry()
	srvReg := prometheus.NewRegistry()
	srv := startServer(t, h, func(c *rpc.ServerConfig) { c.Registerer = srvReg })
	c := newClient(t, func(c *rpc.ClientConfig) { c.AckTimeout = 200 * time.Millisecond; c.Registerer = reg })
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range 40 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "batches sent again", func() bool { return metric(t, reg, "herald_rpc_deliveries_resent_total") > 0 })
	close(release)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := h.delivered()
	if len(got) != 40 {
		t.Fatalf("handler saw %d deliveries, want each of 40 once", len(got))
	}
	for i, d := range got {
		if d.Message.ID != message(i).ID {
			t.Fatalf("delivery %d is %s, want %s", i, d.Message.ID, message(i).ID)
		}
	}
	if v := metric(t, srvReg, "herald_rpc_server_duplicates_total"); v == 0 {
		t.Fatal("the server dropped no duplicate: the resend did not overlap what it had handled")
	}
	if v := metric(t, reg, "herald_rpc_streams_opened_total"); v < 2 {
		t.Fatalf("%v streams opened, want a second one after the ack timeout", v)
	}
}

// A receiver that restarts loses nothing the client holds: what the old
// one did not ack goes to the new one.
func TestServerRestartLosesNothing(t *testing.T) {
	t.Parallel()
	var block atomic.Bool
	entered := make(chan struct{}, 1)
	h1 := &recorder{deliver: func(ctx context.Context, _ []rpc.Delivery) error {
		if !block.Load() {
			return nil
		}
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	cfg := rpc.DefaultServerConfig()
	cfg.Addr, cfg.Secret, cfg.Handler = "127.0.0.1:0", secret, h1
	s1, err := rpc.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s1.Addr()
	c := newClient(t, nil)
	p := c.Peer(addr)
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range 5 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The next batch hangs on s1, which then shuts down.
	block.Store(true)
	for i := 5; i < 10; i++ {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_ = s1.Shutdown(sctx) // forced: the handler holds its batch until cut
	cancel()
	h2 := &recorder{}
	startServer(t, h2, func(c *rpc.ServerConfig) { c.Addr = addr })
	for i := 10; i < 20; i++ {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := h2.delivered()
	if len(got) != 15 {
		t.Fatalf("the new server got %d deliveries, want the 5 the old one never acked and 10 new", len(got))
	}
	for i, d := range got {
		if d.Message.ID != message(5+i).ID {
			t.Fatalf("delivery %d to the new server is %s, want %s", i, d.Message.ID, message(5+i).ID)
		}
	}
}

// A peer that holds more than QueueLen drops all of it, never blocking
// Enqueue, and tells the receiver in its next session which users those
// deliveries were for. An unreachable peer's session was never announced:
// its gap grows; a reachable one's is followed by a new session.
func TestOverflowStartsSessionWithGap(t *testing.T) {
	t.Parallel()
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		addr := freeAddr(t)
		c := newClient(t, func(c *rpc.ClientConfig) { c.QueueLen = 10; c.DialTimeout = 50 * time.Millisecond; c.Registerer = reg })
		p := c.Peer(addr)
		start := time.Now()
		for i := range 25 {
			m := message(i)
			m.Broadcast, m.To = false, []string{fmt.Sprintf("u%02d", i)}
			if err := p.Enqueue(rpc.Delivery{Message: m}); err != nil {
				t.Fatal(err)
			}
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("Enqueue took %v on an unreachable peer: it must not wait", el)
		}
		if v := metric(t, reg, "herald_rpc_deliveries_dropped_total"); v != 20 {
			t.Fatalf("%v dropped, want 20 (two overflows of 10)", v)
		}
		h := &recorder{}
		startServer(t, h, func(c *rpc.ServerConfig) { c.Addr = addr })
		if err := p.Flush(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		got, _ := h.delivered()
		if len(got) != 5 || got[0].Message.ID != message(20).ID {
			t.Fatalf("after the overflows the receiver got %d deliveries (first %v), want the last 5", len(got), got)
		}
		b := h.received()[0]
		var want []string
		for i := range 20 {
			want = append(want, fmt.Sprintf("u%02d", i))
		}
		if b.Session.Prev != 0 || b.Session.GapAll || !slices.Equal(b.Session.GapUsers, want) {
			t.Fatalf("first session %+v: want prev 0 and the 20 dropped users", b.Session)
		}
	})
	t.Run("stuck", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		var once atomic.Bool
		h := &recorder{deliver: func(ctx context.Context, ds []rpc.Delivery) error {
			if len(ds) > 0 && once.CompareAndSwap(false, true) {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}}
		srv := startServer(t, h, nil)
		c := newClient(t, func(c *rpc.ClientConfig) { c.QueueLen = 10; c.BatchMax = 2; c.AckTimeout = time.Minute })
		p := c.Peer(srv.Addr())
		if err := p.Enqueue(rpc.Delivery{Message: message(1)}); err != nil { // u1
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the first batch to hang", once.Load)
		for i := range 12 {
			m := message(100 + i)
			m.Broadcast, m.To = false, []string{"v"}
			if err := p.Enqueue(rpc.Delivery{Message: m}); err != nil {
				t.Fatal(err)
			}
		}
		close(release)
		if err := p.Flush(ctxTimeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		var first, second *rpc.SessionInfo
		for _, b := range h.received() {
			s := b.Session
			switch {
			case first == nil:
				first = &s
			case s.Number != first.Number && second == nil:
				second = &s
			}
		}
		if second == nil || second.Prev != first.Number || second.GapAll || !slices.Contains(second.GapUsers, "v") {
			t.Fatalf("sessions %+v then %+v: want a second one whose prev is the first and whose gap lists v", first, second)
		}
	})
}

// Remove forgets a peer; a later peer for the same address starts a
// session that says the receiver may have missed anything since.
func TestRemoveThenPeerAgain(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	c := newClient(t, nil)
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)
	if err := p.Enqueue(rpc.Delivery{Message: message(0)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	old := h.received()[0].Session.Number
	c.Remove(srv.Addr())
	c.Remove(srv.Addr())
	c.Remove("127.0.0.1:1") // unknown: nothing happens
	if err := p.Enqueue(rpc.Delivery{Message: message(9)}); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Enqueue on a removed peer: %v", err)
	}
	if err := p.Submit(ctx, nil, ""); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Submit on a removed peer: %v", err)
	}
	q := c.Peer(srv.Addr())
	if q == p {
		t.Fatal("Peer after Remove returned the removed peer")
	}
	if err := q.Enqueue(rpc.Delivery{Message: message(1)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := h.received()
	s := b[len(b)-1].Session
	if s.Number == old || s.Prev != old || !s.GapAll {
		t.Fatalf("session after Remove %+v; want a new number, prev %d and a gap of everyone", s, old)
	}
}

// Drop starts a session whose gap names the users the caller dropped.
func TestDrop(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	c := newClient(t, nil)
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)
	p.Cursor("c1")
	eventually(t, 5*time.Second, "the first session", func() bool { return len(h.received()) > 0 })
	p.Drop([]string{"alice", "bob"}, false)
	if err := p.Enqueue(rpc.Delivery{Message: message(1)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := h.received()
	first, last := b[0].Session, b[len(b)-1].Session
	if last.Prev != first.Number || !slices.Equal(last.GapUsers, []string{"alice", "bob"}) {
		t.Fatalf("session after Drop %+v (first %+v)", last, first)
	}
}

// End sends a last batch that says so and waits for its ack; the peer
// takes nothing more.
func TestEnd(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	c := newClient(t, nil)
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)
	for i := range 3 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	p.Cursor("last")
	if err := c.End(ctx); err != nil {
		t.Fatal(err)
	}
	b := h.received()
	if !b[len(b)-1].End {
		t.Fatalf("last batch %+v does not end the session", b[len(b)-1])
	}
	if n := h.count(); n != 3 {
		t.Fatalf("%d delivered before the end, want 3", n)
	}
	if err := p.Enqueue(rpc.Delivery{Message: message(9)}); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Enqueue after End: %v", err)
	}
	// An unreachable peer's End gives up with ctx.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c.Peer(freeAddr(t)).End(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("End on an unreachable peer: %v", err)
	}
}

func TestEnqueueNilMessage(t *testing.T) {
	t.Parallel()
	c := newClient(t, nil)
	if err := c.Peer(freeAddr(t)).Enqueue(rpc.Delivery{}); err == nil {
		t.Fatal("Enqueue took a delivery without a message")
	}
}

func ExamplePeer_Enqueue() {
	cfg := rpc.DefaultClientConfig()
	cfg.Secret = []byte("a cluster secret of 32 bytes....")
	cfg.Source = rpc.Source{ID: "node-1", Incarnation: "8d1c4e2a"}
	c, err := rpc.NewClient(cfg)
	if err != nil {
		panic(err)
	}
	p := c.Peer("127.0.0.1:1") // a push node's internal address
	err = p.Enqueue(rpc.Delivery{Message: message(1)})
	fmt.Println("queued:", err == nil)
	_ = c.Close(context.Background())
	// Output: queued: true
}

func TestBatching(t *testing.T) {
	t.Parallel()
	t.Run("fills batches under load", func(t *testing.T) {
		t.Parallel()
		h := &recorder{}
		srv := startServer(t, h, nil)
		reg := prometheus.NewRegistry()
		c := newClient(t, func(c *rpc.ClientConfig) {
			c.BatchMax = 64
			c.BatchDelay = 20 * time.Millisecond
			c.Registerer = reg
		})
		p := c.Peer(srv.Addr())
		ctx := ctxTimeout(t, 10*time.Second)
		const n = 640
		for i := range n {
			if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		got, batches := h.delivered()
		if len(got) != n {
			t.Fatalf("got %d deliveries, want %d", len(got), n)
		}
		if batches > n/64+2 {
			t.Fatalf("%d deliveries came in %d batches; want about %d", n, batches, n/64)
		}
		if v := metric(t, reg, "herald_rpc_deliveries_acked_total"); v != n {
			t.Fatalf("acked metric %v, want %d", v, n)
		}
		t.Logf("%d deliveries in %d batches", n, batches)
	})
	t.Run("waits BatchDelay to fill a batch", func(t *testing.T) {
		t.Parallel()
		h := &recorder{}
		srv := startServer(t, h, nil)
		c := newClient(t, func(c *rpc.ClientConfig) { c.BatchDelay = 100 * time.Millisecond })
		p := c.Peer(srv.Addr())
		ctx := ctxTimeout(t, 10*time.Second)
		start := time.Now()
		for i := range 5 {
			if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 100*time.Millisecond {
			t.Fatalf("flushed after %v, before BatchDelay", el)
		}
		if _, batches := h.delivered(); batches != 1 {
			t.Fatalf("5 deliveries within BatchDelay came in %d batches, want 1", batches)
		}
	})
}

// metric returns the value of the counter or gauge called name.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestFlushWaitsForAcks(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := &recorder{deliver: func(ctx context.Context, _ []rpc.Delivery) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	srv := startServer(t, h, nil)
	c := newClient(t, nil)
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 10*time.Second)
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush of an idle peer: %v", err)
	}
	for i := range 5 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := p.Flush(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with unacked deliveries: %v, want DeadlineExceeded", err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(ctx) }()
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned %v before the acks", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if n := h.count(); n != 5 {
		t.Fatalf("%d delivered, want 5", n)
	}
}

func TestLargeDeliveries(t *testing.T) {
	t.Parallel()
	h := &recorder{}
	srv := startServer(t, h, nil)
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.BatchMax = 256
		c.BatchMaxBytes = 1 << 20
		c.BatchDelay = 50 * time.Millisecond
	})
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 10*time.Second)
	sizes := []int{300 << 10, 300 << 10, 300 << 10, 300 << 10, 3 << 20, 10, 300 << 10}
	want := make([]rpc.Delivery, len(sizes))
	for i, n := range sizes {
		m := message(i)
		data := bytes.Repeat([]byte{'7'}, n) // a JSON number, n digits
		data[n-1] = byte('0' + i)
		m.Data = data
		want[i] = rpc.Delivery{Message: m}
		if err := p.Enqueue(want[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, batches := h.delivered()
	if len(got) != len(want) {
		t.Fatalf("got %d deliveries, want %d", len(got), len(want))
	}
	for i := range got {
		checkDelivery(t, i, got[i], want[i])
	}
	// 1 MiB batches: [300K 300K 300K] [300K] [3M] [10 300K].
	if batches != 4 {
		t.Fatalf("%d batches, want 4 of at most BatchMaxBytes (or one oversized delivery)", batches)
	}
}
