package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc/rpcpb"
	"github.com/heraldpush/herald/storage"
)

// Client calls other nodes: one [Peer] per address, each with one
// persistent connection. Build it with [NewClient]; it is safe for
// concurrent use.
type Client struct {
	cfg  ClientConfig
	log  *slog.Logger
	m    *clientMetrics
	dial []grpc.DialOption

	mu     sync.Mutex
	peers  map[string]*Peer
	closed bool
	wg     sync.WaitGroup // the peers' sender goroutines
}

// NewClient checks cfg and builds a client; it connects to nothing until
// a peer has work.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newClientMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(newPerRPC(cfg.Secret, cfg.TLS != nil)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: clientPing, Timeout: pingTimeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  baseBackoff(cfg.MaxBackoff),
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   cfg.MaxBackoff,
			},
			MinConnectTimeout: cfg.DialTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newCodec())),
	}
	return &Client{cfg: cfg, log: log, m: m, dial: dial, peers: make(map[string]*Peer)}, nil
}

// baseBackoff is the first wait before reconnecting.
func baseBackoff(maxBackoff time.Duration) time.Duration {
	return min(100*time.Millisecond, maxBackoff)
}

// Peer returns the peer at addr (host:port of its internal RPC server),
// creating it, and its sender goroutine, on first use. The connection is
// opened when there is work for it and kept open. After Close, Peer
// returns a closed peer whose calls fail with ErrClosed.
func (c *Client) Peer(addr string) *Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return newClosedPeer(c, addr)
	}
	if p := c.peers[addr]; p != nil {
		return p
	}
	p := newPeer(c, addr)
	c.peers[addr] = p
	c.wg.Add(1)
	go p.run()
	return p
}

// Remove closes the peer at addr, if any, for a node that left the
// cluster: its queued and unacked deliveries are failed with ErrClosed,
// its connection is closed, and later calls on the *Peer fail with
// ErrClosed. A later Peer(addr) makes a new peer. Remove does not wait for
// the sender to finish (Close does), so it may be called from anywhere but
// OnFailed.
func (c *Client) Remove(addr string) {
	c.mu.Lock()
	p := c.peers[addr]
	delete(c.peers, addr)
	c.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// Flush flushes every current peer (see [Peer.Flush]) and returns when all
// are done or ctx ends; for a node that drains.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	peers := make([]*Peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	var errs []error
	for _, p := range peers { // they flush in parallel anyway: each has its own sender
		if err := p.Flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes every peer as Remove does and waits, while ctx lasts, for
// their goroutines to finish. Calling it again waits the same way.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	peers := c.peers
	c.peers = nil
	c.closed = true
	c.mu.Unlock()
	for _, p := range peers {
		p.close()
	}
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("rpc client: close: %w", context.Cause(ctx))
	}
}

// Peer is one remote node, as seen by a [Client]. Its methods are safe for
// concurrent use.
type Peer struct {
	c       *Client
	addr    string
	conn    *grpc.ClientConn // nil if connErr
	connErr error
	rpc     rpcpb.NodeClient
	ctx     context.Context // done when the peer is closed
	cancel  context.CancelFunc
	notify  chan struct{} // the queue gained deliveries (capacity 1)

	mu      sync.Mutex
	q       []item // the queue is q[head:]
	head    int
	closed  bool
	room    chan struct{} // closed when the sender frees room; nil while nobody waits
	enq     uint64        // deliveries ever enqueued
	done    uint64        // deliveries acked or failed: always the first done enqueued
	flushes []flushWaiter
}

// item is one queued delivery.
type item struct {
	d    Delivery
	at   time.Time // when it was queued: it ages while the peer is unreachable
	size int       // estimated encoded size
}

type flushWaiter struct {
	target uint64
	ch     chan struct{}
}

func newPeer(c *Client, addr string) *Peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{c: c, addr: addr, ctx: ctx, cancel: cancel, notify: make(chan struct{}, 1)}
	// passthrough: dial addr as given, resolving a host name at each
	// connection attempt, so a restarted peer on a new IP is found.
	p.conn, p.connErr = grpc.NewClient("passthrough:///"+addr, c.dial...)
	if p.connErr != nil {
		p.connErr = fmt.Errorf("%w: %s: %w", ErrUnavailable, addr, p.connErr)
	} else {
		p.rpc = rpcpb.NewNodeClient(p.conn)
	}
	return p
}

// newClosedPeer is what a closed client hands out: no connection, no
// sender, every call failing with ErrClosed.
func newClosedPeer(c *Client, addr string) *Peer {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return &Peer{c: c, addr: addr, ctx: ctx, cancel: cancel, notify: make(chan struct{}, 1), closed: true,
		connErr: fmt.Errorf("rpc: %s: %w", addr, ErrClosed)}
}

// Addr returns the peer's address.
func (p *Peer) Addr() string { return p.addr }

// close stops taking deliveries and tells the sender to fail what is left.
func (p *Peer) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.room != nil {
			close(p.room)
			p.room = nil
		}
	}
	p.mu.Unlock()
	p.cancel()
}

// Enqueue puts d on the peer's queue, behind everything enqueued before
// it. If the queue is full it waits for room; if ctx ends first it returns
// an error wrapping ErrBusy (and ctx's cause), and d is not queued. After
// Remove or Close it returns an error wrapping ErrClosed.
//
// A nil error means d will be acked or reported to OnFailed, never both.
// d.Message must not be modified until then.
func (p *Peer) Enqueue(ctx context.Context, d Delivery) error {
	if d.Message == nil {
		return fmt.Errorf("rpc: enqueue to %s: delivery without a message", p.addr)
	}
	size := sizeOf(d)
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return fmt.Errorf("rpc: enqueue to %s: %w", p.addr, ErrClosed)
		}
		if len(p.q)-p.head < p.c.cfg.QueueLen {
			break
		}
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return fmt.Errorf("rpc: enqueue to %s: %w: %w", p.addr, ErrBusy, context.Cause(ctx))
		}
		p.mu.Lock()
	}
	p.q = append(p.q, item{d: d, at: time.Now(), size: size})
	p.enq++
	p.c.m.queued.Inc()
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
	return nil
}

// Flush waits until every delivery enqueued before the call has been
// acked or reported to OnFailed, or until ctx ends (then it returns ctx's
// cause). It reports completion, not success: a closed peer's Flush
// returns nil once its deliveries have been failed.
func (p *Peer) Flush(ctx context.Context) error {
	p.mu.Lock()
	if p.done >= p.enq {
		p.mu.Unlock()
		return nil
	}
	w := flushWaiter{target: p.enq, ch: make(chan struct{})}
	p.flushes = append(p.flushes, w)
	p.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, o := range p.flushes {
			if o.ch == w.ch {
				p.flushes = append(p.flushes[:i], p.flushes[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		return fmt.Errorf("rpc: flush %s: %w", p.addr, context.Cause(ctx))
	}
}

// completed counts n more deliveries, the oldest outstanding, as acked or
// failed, and releases the Flush calls they were holding.
func (p *Peer) completed(n int) {
	p.mu.Lock()
	p.done += uint64(n)
	kept := p.flushes[:0]
	for _, w := range p.flushes {
		if w.target <= p.done {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.flushes[len(kept):])
	p.flushes = kept
	p.mu.Unlock()
}

// take moves queued items to dst until dst holds max items or the next one
// would take its estimated size, used so far, over budget (the first item
// of a batch always goes). It reports the new size and whether dst is full.
func (p *Peer) take(dst []item, max, budget, used int) ([]item, int, bool) {
	p.mu.Lock()
	full := false
	k := 0
	for avail := len(p.q) - p.head; len(dst)+k < max && k < avail; k++ {
		size := p.q[p.head+k].size
		if used+size > budget && len(dst)+k > 0 {
			full = true
			break
		}
		used += size
	}
	if k > 0 {
		dst = append(dst, p.q[p.head:p.head+k]...)
		p.popLocked(k)
	}
	p.mu.Unlock()
	if k > 0 {
		p.c.m.queued.Sub(float64(k))
	}
	return dst, used, full || len(dst) >= max
}

// popLocked drops the first k queued items and wakes Enqueue calls
// waiting for room.
func (p *Peer) popLocked(k int) {
	clear(p.q[p.head : p.head+k]) // let the messages go
	p.head += k
	switch {
	case p.head == len(p.q):
		p.q, p.head = p.q[:0], 0
	case p.head >= 1024 && p.head*2 >= len(p.q):
		n := copy(p.q, p.q[p.head:])
		clear(p.q[n:])
		p.q, p.head = p.q[:n], 0
	}
	if p.room != nil {
		close(p.room)
		p.room = nil
	}
}

// takeOlder removes the queued items enqueued before cutoff (all of them
// if cutoff is zero), and returns their deliveries.
func (p *Peer) takeOlder(cutoff time.Time) []Delivery {
	p.mu.Lock()
	k := 0
	for avail := len(p.q) - p.head; k < avail; k++ {
		if !cutoff.IsZero() && !p.q[p.head+k].at.Before(cutoff) {
			break
		}
	}
	var ds []Delivery
	if k > 0 {
		ds = make([]Delivery, k)
		for i := range ds {
			ds[i] = p.q[p.head+i].d
		}
		p.popLocked(k)
	}
	p.mu.Unlock()
	if k > 0 {
		p.c.m.queued.Sub(float64(k))
	}
	return ds
}

// oldest returns when the first queued item was enqueued.
func (p *Peer) oldest() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.q) {
		return time.Time{}, false
	}
	return p.q[p.head].at, true
}

// usable returns why unary calls cannot be made, if they cannot.
func (p *Peer) usable() error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return fmt.Errorf("rpc: %s: %w", p.addr, ErrClosed)
	}
	return p.connErr
}

// Submit hands stored messages to the peer (a dispatch node) for routing.
// It honours ctx's deadline; set one. Errors wrap ErrUnavailable when the
// peer cannot be reached or the deadline passed (try another dispatch
// node; the messages are in the store either way), ErrUnauthenticated,
// ErrRejected (the peer's handler failed) or ErrClosed.
func (p *Peer) Submit(ctx context.Context, ms []*storage.Message) error {
	if err := p.usable(); err != nil {
		return err
	}
	for _, m := range ms {
		if m == nil {
			return fmt.Errorf("rpc: submit to %s: nil message", p.addr)
		}
	}
	if _, err := p.rpc.Submit(ctx, &rpcpb.SubmitRequest{Messages: messagesToProto(ms)}); err != nil {
		return fromStatus(ctx, "submit", p.addr, err, nil)
	}
	return nil
}

// Verify asks the peer (an auth node) who token belongs to. It honours
// ctx's deadline; set one. An invalid token gives an error wrapping
// auth.ErrInvalidToken whose text is the auth node's, fit for the client;
// every other error wraps auth.ErrUnavailable, and also ErrUnavailable
// when the peer cannot be reached.
func (p *Peer) Verify(ctx context.Context, token string) (auth.Identity, error) {
	err := p.usable()
	if err == nil {
		var r *rpcpb.VerifyReply
		r, err = p.rpc.Verify(ctx, &rpcpb.VerifyRequest{Token: token})
		if err == nil {
			id := auth.Identity{User: r.GetUser()}
			if e := r.GetExpiresUnix(); e != 0 {
				id.Expires = time.Unix(e, 0)
			}
			return id, nil
		}
		err = fromStatus(ctx, "verify", p.addr, err, auth.ErrUnavailable)
	}
	if !errors.Is(err, auth.ErrInvalidToken) && !errors.Is(err, auth.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", auth.ErrUnavailable, err)
	}
	return auth.Identity{}, err
}
