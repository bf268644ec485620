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
	var f failures
	c := newClient(t, func(c *rpc.ClientConfig) { c.OnFailed = f.record })
	p := c.Peer(srv.Addr())
	if c.Peer(srv.Addr()) != p {
		t.Fatal("Peer made a second peer for one address")
	}
	const n = 3000
	want := make([]rpc.Delivery, n)
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range want {
		want[i] = rpc.Delivery{Message: message(i), Hops: i % 3}
		if err := p.Enqueue(ctx, want[i]); err != nil {
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
	if f.count() != 0 {
		_, errs := f.get()
		t.Fatalf("%d failures, first: %v", len(errs), errs[0])
	}
	t.Logf("%d deliveries in %d batches", n, batches)
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
			if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
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
			if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
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

func TestBackpressure(t *testing.T) {
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
	var f failures
	const queueLen, batchMax, window = 10, 4, 2
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.QueueLen, c.BatchMax, c.Window = queueLen, batchMax, window
		c.BatchDelay = 300 * time.Millisecond // batches fill before they go
		c.AckTimeout = 30 * time.Second
		c.OnFailed = f.record
	})
	p := c.Peer(srv.Addr())
	accepted := 0
	var err error
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		err = p.Enqueue(ctx, rpc.Delivery{Message: message(i)})
		cancel()
		if err != nil {
			break
		}
		accepted++
	}
	if !errors.Is(err, rpc.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enqueue on a full peer: %v; want ErrBusy and DeadlineExceeded", err)
	}
	if want := queueLen + window*batchMax; accepted != want {
		t.Fatalf("Enqueue took %d deliveries before blocking, want QueueLen + Window*BatchMax = %d", accepted, want)
	}
	close(release)
	if err := p.Flush(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	got, _ := h.delivered()
	if len(got) != accepted || f.count() != 0 {
		t.Fatalf("after release: %d delivered, %d failed; want %d delivered", len(got), f.count(), accepted)
	}
	for i, d := range got {
		if d.Message.ID != message(i).ID {
			t.Fatalf("delivery %d is %s, want %s", i, d.Message.ID, message(i).ID)
		}
	}
}

func TestAckTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := &recorder{deliver: func(context.Context, []rpc.Delivery) error {
		<-release // stuck, deaf to ctx
		return nil
	}}
	srv := startServer(t, h, nil)
	var f failures
	const ackTimeout = 300 * time.Millisecond
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.AckTimeout = ackTimeout
		c.OnFailed = f.record
	})
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 10*time.Second)
	start := time.Now()
	for i := range 40 {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	ds, errs := f.get()
	if len(ds) != 40 {
		t.Fatalf("%d deliveries failed, want 40", len(ds))
	}
	if el < ackTimeout || el > ackTimeout+time.Second {
		t.Fatalf("failed after %v; want about AckTimeout (%v)", el, ackTimeout)
	}
	for i, d := range ds {
		if d.Message.ID != message(i).ID {
			t.Fatalf("failure %d is %s, want %s (enqueue order)", i, d.Message.ID, message(i).ID)
		}
		if !errors.Is(errs[i], rpc.ErrAckTimeout) {
			t.Fatalf("failure %d: %v, want ErrAckTimeout", i, errs[i])
		}
	}
	t.Logf("40 deliveries failed after %v: %v", el, errs[0])

	// The peer comes back to life: the next deliveries get through.
	close(release)
	for i := 100; i < 110; i++ {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if f.count() != 40 {
		t.Fatalf("%d failures after recovery, want still 40", f.count())
	}
	eventually(t, 2*time.Second, "the deliveries after recovery", func() bool {
		got, _ := h.delivered()
		n := 0
		for _, d := range got {
			if d.Message.ID >= message(100).ID {
				n++
			}
		}
		return n == 10
	})
}

func TestHandlerRefusesBatch(t *testing.T) {
	t.Parallel()
	h := &recorder{deliver: func(_ context.Context, ds []rpc.Delivery) error {
		for _, d := range ds {
			if d.Message.ID == message(5).ID {
				return errors.New("node is draining")
			}
		}
		return nil
	}}
	srv := startServer(t, h, nil)
	var f failures
	reg := prometheus.NewRegistry()
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.BatchMax = 1
		c.OnFailed = f.record
		c.Registerer = reg
	})
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)
	for i := range 10 {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ds, errs := f.get()
	if len(ds) != 1 || ds[0].Message.ID != message(5).ID {
		t.Fatalf("failed %v, want only message 5", ds)
	}
	if !errors.Is(errs[0], rpc.ErrRejected) || !bytes.Contains([]byte(errs[0].Error()), []byte("node is draining")) {
		t.Fatalf("refusal reported as %v", errs[0])
	}
	if v := metric(t, reg, "herald_rpc_streams_opened_total"); v != 1 {
		t.Fatalf("%v streams opened, want 1: a refusal must not break the stream", v)
	}
}

func TestServerRestart(t *testing.T) {
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
	var f failures
	c := newClient(t, func(c *rpc.ClientConfig) { c.OnFailed = f.record })
	p := c.Peer(addr)
	ctx := ctxTimeout(t, 10*time.Second)
	for i := range 5 {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// The next batch hangs on s1, which then shuts down.
	block.Store(true)
	for i := 5; i < 10; i++ {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = s1.Shutdown(sctx) // forced: the handler holds its batch until cut
	cancel()
	t.Logf("shutdown of the first server: %v", err)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ds, errs := f.get()
	if len(ds) != 5 {
		t.Fatalf("%d deliveries failed with the server, want the 5 unacked", len(ds))
	}
	for i, d := range ds {
		if d.Message.ID != message(5+i).ID || !errors.Is(errs[i], rpc.ErrUnavailable) {
			t.Fatalf("failure %d: %s, %v; want %s, ErrUnavailable", i, d.Message.ID, errs[i], message(5+i).ID)
		}
	}
	t.Logf("unacked deliveries failed with: %v", errs[0])

	// A new server on the same address gets the next deliveries.
	h2 := &recorder{}
	startServer(t, h2, func(c *rpc.ServerConfig) { c.Addr = addr })
	for i := 10; i < 20; i++ {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := h2.delivered()
	if len(got) != 10 || f.count() != 5 {
		t.Fatalf("new server got %d deliveries (want 10); %d failures (want 5)", len(got), f.count())
	}
	for i, d := range got {
		if d.Message.ID != message(10+i).ID {
			t.Fatalf("delivery %d to the new server is %s, want %s", i, d.Message.ID, message(10+i).ID)
		}
	}
}

func TestUnreachablePeerAges(t *testing.T) {
	t.Parallel()
	var f failures
	const queueTimeout = 200 * time.Millisecond
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.QueueLen = 5
		c.QueueTimeout = queueTimeout
		c.DialTimeout = 100 * time.Millisecond
		c.OnFailed = f.record
	})
	p := c.Peer(freeAddr(t))
	ctx := ctxTimeout(t, 10*time.Second)
	start := time.Now()
	// Twice the queue: the second half waits for the first to age out,
	// it does not wait forever.
	for i := range 10 {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	ds, errs := f.get()
	if len(ds) != 10 {
		t.Fatalf("%d failed, want 10", len(ds))
	}
	for i, d := range ds {
		if d.Message.ID != message(i).ID || !errors.Is(errs[i], rpc.ErrUnavailable) {
			t.Fatalf("failure %d: %s, %v", i, d.Message.ID, errs[i])
		}
	}
	if el < 2*queueTimeout || el > 2*queueTimeout+2*time.Second {
		t.Fatalf("two queues' worth failed after %v; want about 2*QueueTimeout", el)
	}
	t.Logf("failed after %v with: %v", el, errs[0])
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
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
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

func TestRemove(t *testing.T) {
	t.Parallel()
	var f failures
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.QueueTimeout = time.Minute
		c.DialTimeout = 50 * time.Millisecond
		c.OnFailed = f.record
	})
	addr := freeAddr(t)
	p := c.Peer(addr)
	ctx := ctxTimeout(t, 5*time.Second)
	for i := range 5 {
		if err := p.Enqueue(ctx, rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.Remove(addr)
	c.Remove(addr)
	c.Remove("127.0.0.1:1") // unknown: nothing happens
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ds, errs := f.get()
	if len(ds) != 5 || !errors.Is(errs[0], rpc.ErrClosed) {
		t.Fatalf("Remove failed %d deliveries (%v), want 5 with ErrClosed", len(ds), errs)
	}
	if err := p.Enqueue(ctx, rpc.Delivery{Message: message(9)}); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Enqueue on a removed peer: %v", err)
	}
	if err := p.Submit(ctx, nil); !errors.Is(err, rpc.ErrClosed) {
		t.Fatalf("Submit on a removed peer: %v", err)
	}
	if c.Peer(addr) == p {
		t.Fatal("Peer after Remove returned the removed peer")
	}
}

func TestEnqueueNilMessage(t *testing.T) {
	t.Parallel()
	c := newClient(t, nil)
	if err := c.Peer(freeAddr(t)).Enqueue(context.Background(), rpc.Delivery{}); err == nil {
		t.Fatal("Enqueue took a delivery without a message")
	}
}

func ExamplePeer_Enqueue() {
	cfg := rpc.DefaultClientConfig()
	cfg.Secret = []byte("a cluster secret of 32 bytes....")
	cfg.OnFailed = func(addr string, ds []rpc.Delivery, err error) {
		// Count, log; the messages wait in the store for replay.
		fmt.Println(len(ds), "deliveries to", addr, "failed:", errors.Is(err, rpc.ErrClosed))
	}
	c, err := rpc.NewClient(cfg)
	if err != nil {
		panic(err)
	}
	p := c.Peer("127.0.0.1:1") // a push node's internal address
	m := message(1)
	_ = p.Enqueue(context.Background(), rpc.Delivery{Message: m})
	_ = c.Close(context.Background())
	// Output: 1 deliveries to 127.0.0.1:1 failed: true
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
		if err := p.Enqueue(ctx, want[i]); err != nil {
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
