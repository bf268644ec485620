package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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

	sessions atomic.Uint64 // the last session number handed out

	mu      sync.Mutex
	peers   map[string]*Peer
	removed map[string]uint64 // address -> session of the peer Remove closed there
	closed  bool
	wg      sync.WaitGroup // the peers' sender goroutines
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
	if cfg.Dialer != nil {
		dial = append(dial, grpc.WithContextDialer(cfg.Dialer))
	}
	return &Client{cfg: cfg, log: log, m: m, dial: dial, peers: make(map[string]*Peer), removed: make(map[string]uint64)}, nil
}

// baseBackoff is the first wait before reconnecting.
func baseBackoff(maxBackoff time.Duration) time.Duration {
	return min(100*time.Millisecond, maxBackoff)
}

// Peer returns the peer at addr (host:port of its internal RPC server),
// creating it, and its sender goroutine, on first use. The connection is
// opened when there is work for it and kept open. After Close, Peer
// returns a closed peer whose calls fail with ErrClosed.
//
// A peer made for an address whose previous peer was removed starts a
// session that says so (prev, with a gap of every user): the receiver
// cannot know what was not sent meanwhile.
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
	if prev, ok := c.removed[addr]; ok {
		delete(c.removed, addr)
		p.sess.prev = prev
		p.sess.gapAll = true
	}
	c.peers[addr] = p
	c.wg.Add(1)
	go p.run()
	return p
}

// nextSession hands out a new session number.
func (c *Client) nextSession() uint64 { return c.sessions.Add(1) }

// Remove closes the peer at addr, if any, for a node that left the
// cluster: what it still had queued or unacked is dropped, its connection
// is closed, and later calls on the *Peer fail with ErrClosed. A later
// Peer(addr) makes a new peer, whose session tells the receiver it may
// have missed anything since. Remove does not wait for the sender to
// finish (Close does).
func (c *Client) Remove(addr string) {
	c.mu.Lock()
	p := c.peers[addr]
	delete(c.peers, addr)
	if p != nil {
		c.removed[addr] = p.sessionNumber()
	}
	c.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// Flush flushes every current peer (see [Peer.Flush]) and returns when all
// are done or ctx ends.
func (c *Client) Flush(ctx context.Context) error {
	return c.each(ctx, (*Peer).Flush)
}

// End ends the session of every current peer (see [Peer.End]), for a
// node that leaves the cluster, and returns when all are acked or ctx
// ends.
func (c *Client) End(ctx context.Context) error {
	return c.each(ctx, (*Peer).End)
}

func (c *Client) each(ctx context.Context, f func(*Peer, context.Context) error) error {
	c.mu.Lock()
	peers := make([]*Peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(p, ctx)
		}()
	}
	wg.Wait()
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
// concurrent use; none of them waits for the peer, but Flush and End.
type Peer struct {
	c       *Client
	addr    string
	conn    *grpc.ClientConn // nil if connErr
	connErr error
	rpc     rpcpb.NodeClient
	ctx     context.Context // done when the peer is closed
	cancel  context.CancelFunc
	notify  chan struct{} // there is work for the sender (capacity 1)

	mu      sync.Mutex
	closed  bool
	ending  bool   // End was called: nothing more is queued
	q       []item // the queue is q[head:]
	head    int
	qn      int      // deliveries in the queue
	marks   int      // cursors and ends in the queue
	unacked []*batch // taken from the queue, not acked yet, in order
	held    int      // deliveries queued or unacked
	heldB   int      // their estimated bytes
	sess    session
	next    uint64 // session-wide number of the next delivery taken into a batch
	enq     uint64 // deliveries ever enqueued
	done    uint64 // deliveries acked or dropped: always the first enqueued
	flushes []flushWaiter
	endDone chan struct{} // closed when the end batch is acked (or the peer closed)
}

// session is the peer's current delivery session.
type session struct {
	number    uint64
	prev      uint64
	gapUsers  map[string]struct{}
	gapAll    bool
	announced bool // a stream was opened in it: the receiver may know it
}

// maxGapUsers bounds the users a gap lists; beyond it the gap is all.
const maxGapUsers = 1000

// item is one queued delivery, cursor or end.
type item struct {
	d      Delivery // d.Message is nil for a cursor or the end
	cursor string
	end    bool
	size   int // estimated encoded size of a delivery
}

// batch is deliveries taken from the queue to send together.
type batch struct {
	first  uint64 // session-wide number of ds[0]
	ds     []Delivery
	cursor string // follows ds, if set
	end    bool
	size   int
	seq    uint64    // stream sequence it was last sent with
	sent   time.Time // when it was last sent
}

type flushWaiter struct {
	target uint64
	ch     chan struct{}
}

func newPeer(c *Client, addr string) *Peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{c: c, addr: addr, ctx: ctx, cancel: cancel, notify: make(chan struct{}, 1), next: 1,
		sess: session{number: c.nextSession()}}
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

func (p *Peer) sessionNumber() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.sess.announced {
		return p.sess.prev
	}
	return p.sess.number
}

// close stops taking work and tells the sender to drop what is left.
func (p *Peer) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.dropLocked(nil, false) // releases Flush and End
	}
	p.mu.Unlock()
	p.cancel()
}

func (p *Peer) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Enqueue puts d on the peer's queue, behind everything enqueued before
// it, and returns at once. It never waits: when the peer holds more than
// QueueLen deliveries or QueueBytes (queued and unacked), because it is
// slow, stuck or unreachable, everything it holds is dropped and its next
// session tells the receiver which users it dropped deliveries for (a
// gap), so that the receiver can recover them from the store. After
// Remove, Close or End it returns an error wrapping ErrClosed.
//
// d.Message must not be modified until d is acked or dropped.
func (p *Peer) Enqueue(d Delivery) error {
	if d.Message == nil {
		return fmt.Errorf("rpc: enqueue to %s: delivery without a message", p.addr)
	}
	size := sizeOf(d)
	p.mu.Lock()
	if p.closed || p.ending {
		p.mu.Unlock()
		return fmt.Errorf("rpc: enqueue to %s: %w", p.addr, ErrClosed)
	}
	if p.held+1 > p.c.cfg.QueueLen || p.heldB+size > p.c.cfg.QueueBytes {
		n := p.held
		p.dropLocked(nil, false)
		p.c.m.dropped.Add(float64(n))
		p.c.log.Warn("rpc peer fell too far behind; dropped its deliveries, its next session tells it what to recover",
			"peer", p.addr, "dropped", n)
	}
	p.q = append(p.q, item{d: d, size: size})
	p.qn++
	p.held++
	p.heldB += size
	p.enq++
	p.c.m.queued.Inc()
	p.mu.Unlock()
	p.wake()
	return nil
}

// Cursor queues a cursor: once the receiver has it, every delivery queued
// before it has been handled. A cursor queued right after another
// replaces it. It never waits, and is ignored after Remove or Close.
func (p *Peer) Cursor(c string) {
	p.mu.Lock()
	if p.closed || p.ending || c == "" {
		p.mu.Unlock()
		return
	}
	if n := len(p.q); n > p.head && p.q[n-1].d.Message == nil && !p.q[n-1].end {
		p.q[n-1].cursor = c
	} else {
		p.q = append(p.q, item{cursor: c})
		p.marks++
	}
	p.mu.Unlock()
	p.wake()
}

// Drop tells the peer that its caller dropped deliveries meant for it
// (for users, or all of them): the peer drops what it holds too and
// starts a new session, whose gap tells the receiver.
func (p *Peer) Drop(users []string, all bool) {
	p.mu.Lock()
	if !p.closed {
		p.dropLocked(users, all)
	}
	p.mu.Unlock()
	p.wake()
}

// dropLocked drops every delivery held (queued or unacked) into a gap,
// with users (or all) besides, and starts a new session unless the
// current one was never announced (then its gap just grows).
func (p *Peer) dropLocked(users []string, all bool) {
	gap := p.sess.gapUsers
	addGap := func(u string) {
		if p.sess.gapAll {
			return
		}
		if gap == nil {
			gap = make(map[string]struct{})
		}
		gap[u] = struct{}{}
		if len(gap) > maxGapUsers {
			p.sess.gapAll, gap = true, nil
		}
	}
	if all {
		p.sess.gapAll, gap = true, nil
	}
	for _, u := range users {
		addGap(u)
	}
	dropped := 0
	for _, b := range p.unacked {
		for _, d := range b.ds {
			if d.Message.Broadcast {
				p.sess.gapAll, gap = true, nil
			}
			for _, u := range d.Message.To {
				addGap(u)
			}
		}
		dropped += len(b.ds)
		p.c.m.inFlight.Sub(float64(len(b.ds)))
	}
	p.unacked = nil
	keep := p.q[:0]
	for _, it := range p.q[p.head:] {
		switch {
		case it.end:
			keep = append(keep, it)
		case it.d.Message != nil:
			if it.d.Message.Broadcast {
				p.sess.gapAll, gap = true, nil
			}
			for _, u := range it.d.Message.To {
				addGap(u)
			}
			dropped++
		}
	}
	clear(p.q[len(keep):])
	p.q, p.head = keep, 0
	p.c.m.queued.Sub(float64(p.qn))
	p.qn, p.held, p.heldB, p.marks = 0, 0, 0, len(keep)
	p.sess.gapUsers = gap
	if dropped == 0 && len(users) == 0 && !all {
		return
	}
	if p.sess.announced {
		p.sess = session{number: p.c.nextSession(), prev: p.sess.number, gapUsers: p.sess.gapUsers, gapAll: p.sess.gapAll}
	}
	p.next = 1
	p.completedLocked(dropped)
}

// Flush waits until every delivery enqueued before the call has been
// acked or dropped, or until ctx ends (then it returns ctx's cause).
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

// End ends the peer's session for a node that leaves: it queues a last
// batch that says so, after everything queued, and waits until the peer
// has acked it (so the receiver knows nothing more comes) or ctx ends.
// Enqueue fails afterwards.
func (p *Peer) End(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	if !p.ending {
		p.ending = true
		p.endDone = make(chan struct{})
		p.q = append(p.q, item{end: true})
		p.marks++
	}
	done := p.endDone
	p.mu.Unlock()
	p.wake()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("rpc: end session with %s: %w", p.addr, context.Cause(ctx))
	}
}

// completedLocked counts n more deliveries, the oldest outstanding, as
// acked or dropped, and releases the Flush calls they were holding.
func (p *Peer) completedLocked(n int) {
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
	if p.closed && p.endDone != nil {
		close(p.endDone)
		p.endDone = nil
	}
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

// Submit hands stored messages to the peer (a dispatch node) for routing,
// with this collect node's cursor ("" for none); with no messages it only
// updates the cursor.
// It honours ctx's deadline; set one. Errors wrap ErrUnavailable when the
// peer cannot be reached or the deadline passed (try another dispatch
// node; the messages are in the store either way), ErrUnauthenticated,
// ErrRejected (the peer's handler failed) or ErrClosed.
func (p *Peer) Submit(ctx context.Context, ms []*storage.Message, cursor string) error {
	if err := p.usable(); err != nil {
		return err
	}
	for _, m := range ms {
		if m == nil {
			return fmt.Errorf("rpc: submit to %s: nil message", p.addr)
		}
	}
	req := &rpcpb.SubmitRequest{Messages: messagesToProto(ms), Cursor: cursor,
		SourceId: p.c.cfg.Source.ID, SourceIncarnation: p.c.cfg.Source.Incarnation}
	if _, err := p.rpc.Submit(ctx, req); err != nil {
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
