package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/node/rpc/rpcpb"
	"github.com/heraldpush/herald/storage"
)

func TestSubmit(t *testing.T) {
	t.Parallel()
	h := &recorder{submit: func(_ context.Context, ms []*storage.Message) error {
		switch ms[0].ID {
		case "fail":
			return errors.New("dispatch queue closed")
		case "down":
			return fmt.Errorf("lookup: %w", storage.ErrUnavailable)
		}
		return nil
	}}
	srv := startServer(t, h, nil)
	c := newClient(t, nil)
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)

	want := []*storage.Message{message(0), message(1), message(2), message(3)}
	if err := p.Submit(ctx, want, "c1"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	got, cursor, from := h.submitted[0], h.cursors[0], h.from[0]
	h.mu.Unlock()
	if cursor != "c1" || from != (rpc.Source{ID: "dispatch-1", Incarnation: "inc-1"}) {
		t.Fatalf("Submit came with cursor %q from %+v", cursor, from)
	}
	if len(got) != len(want) {
		t.Fatalf("submitted %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		checkDelivery(t, i, rpc.Delivery{Message: got[i]}, rpc.Delivery{Message: want[i]})
	}

	err := p.Submit(ctx, []*storage.Message{{ID: "fail"}}, "")
	if !errors.Is(err, rpc.ErrRejected) || err.Error() != "dispatch queue closed" {
		t.Fatalf("handler error: %v; want ErrRejected with the handler's text", err)
	}
	err = p.Submit(ctx, []*storage.Message{{ID: "down"}}, "")
	if !errors.Is(err, rpc.ErrUnavailable) || status.Code(err) != codes.Unavailable {
		t.Fatalf("handler's storage.ErrUnavailable: %v; want ErrUnavailable", err)
	}
	if err := p.Submit(ctx, []*storage.Message{nil}, ""); err == nil {
		t.Fatal("Submit took a nil message")
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	jwtSecret := []byte("a jwt secret that is long enough")
	j, err := auth.NewJWT(auth.JWTConfig{Secret: jwtSecret, AllowNoExpiry: true})
	if err != nil {
		t.Fatal(err)
	}
	h := &recorder{verify: func(ctx context.Context, token string) (auth.Identity, error) {
		switch token {
		case "down":
			return auth.Identity{}, fmt.Errorf("%w: remote auth timed out", auth.ErrUnavailable)
		case "boom":
			return auth.Identity{}, errors.New("boom")
		}
		return j.Authenticate(ctx, token)
	}}
	srv := startServer(t, h, nil)
	c := newClient(t, nil)
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)

	good, _ := auth.Mint(jwtSecret, "alice", time.Hour)
	id, err := p.Verify(ctx, good)
	if err != nil || id.User != "alice" || time.Until(id.Expires) < 59*time.Minute || time.Until(id.Expires) > time.Hour {
		t.Fatalf("good token: %+v, %v", id, err)
	}
	forever, _ := auth.Mint(jwtSecret, "bob", 0)
	if id, err := p.Verify(ctx, forever); err != nil || id.User != "bob" || !id.Expires.IsZero() {
		t.Fatalf("token without expiry: %+v, %v", id, err)
	}

	expired, _ := auth.Mint(jwtSecret, "carol", -time.Hour)
	_, local := j.Authenticate(ctx, expired)
	_, err = p.Verify(ctx, expired)
	if !errors.Is(err, auth.ErrInvalidToken) || errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("expired token: %v; want auth.ErrInvalidToken only", err)
	}
	if err.Error() != local.Error() {
		t.Fatalf("expired token: text %q, want the auth node's %q", err, local)
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("expired token: code %v", status.Code(err))
	}

	_, err = p.Verify(ctx, "down")
	if !errors.Is(err, auth.ErrUnavailable) || !errors.Is(err, rpc.ErrUnavailable) || errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("auth backend down: %v; want auth.ErrUnavailable", err)
	}
	_, err = p.Verify(ctx, "boom")
	if !errors.Is(err, auth.ErrUnavailable) || !errors.Is(err, rpc.ErrRejected) || errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("handler failure: %v; want auth.ErrUnavailable and ErrRejected", err)
	}

	// An auth node that cannot be reached.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = c.Peer(freeAddr(t)).Verify(short, good)
	if !errors.Is(err, auth.ErrUnavailable) || !errors.Is(err, rpc.ErrUnavailable) {
		t.Fatalf("unreachable auth node: %v; want auth.ErrUnavailable and ErrUnavailable", err)
	}
	t.Logf("unreachable: %v", err)
}

func TestWrongSecret(t *testing.T) {
	t.Parallel()
	h := &recorder{verify: func(context.Context, string) (auth.Identity, error) {
		return auth.Identity{User: "alice"}, nil
	}}
	srvReg := prometheus.NewRegistry()
	srv := startServer(t, h, func(c *rpc.ServerConfig) { c.Registerer = srvReg })
	c := newClient(t, func(c *rpc.ClientConfig) {
		c.Secret = []byte("another secret, another cluster")
	})
	p := c.Peer(srv.Addr())
	ctx := ctxTimeout(t, 5*time.Second)

	err := p.Submit(ctx, []*storage.Message{message(1)}, "")
	if !errors.Is(err, rpc.ErrUnauthenticated) || status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Submit with the wrong secret: %v", err)
	}
	_, err = p.Verify(ctx, "token")
	if !errors.Is(err, rpc.ErrUnauthenticated) || status.Code(err) != codes.Unauthenticated || errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("Verify with the wrong secret: %v; want ErrUnauthenticated, not an invalid token", err)
	}

	// Deliveries are refused stream after stream; they are never acked.
	for i := range 3 {
		if err := p.Enqueue(rpc.Delivery{Message: message(i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "refused streams", func() bool { return metric(t, srvReg, "herald_rpc_server_refused_total") >= 4 })
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if err := p.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with the wrong secret: %v, want DeadlineExceeded", err)
	}
	cancel()
	if h.count() != 0 || len(h.submitted) != 0 {
		t.Fatal("the handler was called for a caller with the wrong secret")
	}

	// A raw stream, without and with a wrong credential, that sends a
	// batch anyway: refused, and nothing is delivered.
	conn, err := grpc.NewClient("passthrough:///"+srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, md := range []metadata.MD{nil, metadata.Pairs("authorization", "Herald 00ff")} {
		sctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
		st, err := rpcpb.NewNodeClient(conn).Deliver(sctx)
		if err == nil {
			_ = st.Send(&rpcpb.DeliverBatch{Seq: 1, Deliveries: []*rpcpb.Delivery{{Message: &rpcpb.Message{Id: "x", Broadcast: true}}}})
			_, err = st.Recv()
		}
		cancel()
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("raw Deliver with credential %v: %v, want Unauthenticated", md, err)
		}
	}
	if h.count() != 0 {
		t.Fatal("a stream with a wrong credential delivered")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	s := rpc.DefaultServerConfig()
	if err := s.Validate(); !errors.Is(err, rpc.ErrInvalidConfig) {
		t.Fatalf("server config without secret or handler: %v", err)
	}
	s.Secret, s.Handler = secret, &recorder{}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.Secret = []byte("short")
	if _, err := rpc.NewServer(s); !errors.Is(err, rpc.ErrInvalidConfig) {
		t.Fatalf("short secret: %v", err)
	}

	c := rpc.DefaultClientConfig()
	if err := c.Validate(); !errors.Is(err, rpc.ErrInvalidConfig) {
		t.Fatalf("client config without secret: %v", err)
	}
	c.Secret = secret
	if err := c.Validate(); !errors.Is(err, rpc.ErrInvalidConfig) {
		t.Fatalf("client config without source: %v", err)
	}
	c.Source = rpc.Source{ID: "n", Incarnation: "1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*rpc.ClientConfig){
		"QueueLen":      func(c *rpc.ClientConfig) { c.QueueLen = 0 },
		"QueueBytes":    func(c *rpc.ClientConfig) { c.QueueBytes = 10 },
		"BatchMax":      func(c *rpc.ClientConfig) { c.BatchMax = 0 },
		"BatchMaxBytes": func(c *rpc.ClientConfig) { c.BatchMaxBytes = 10 },
		"BatchDelay":    func(c *rpc.ClientConfig) { c.BatchDelay = -1 },
		"Window":        func(c *rpc.ClientConfig) { c.Window = 0 },
		"AckTimeout":    func(c *rpc.ClientConfig) { c.AckTimeout = 0 },
		"DialTimeout":   func(c *rpc.ClientConfig) { c.DialTimeout = 0 },
		"MaxBackoff":    func(c *rpc.ClientConfig) { c.MaxBackoff = 0 },
	} {
		cc := c
		mod(&cc)
		if _, err := rpc.NewClient(cc); !errors.Is(err, rpc.ErrInvalidConfig) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
