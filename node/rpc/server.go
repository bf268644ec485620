package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc/rpcpb"
	"github.com/heraldpush/herald/storage"
)

// Handler serves a [Server]'s calls; the node implements it.
//
// Concurrency: Deliver is called for one delivery session at a time, batch
// after batch in the order they were sent, never concurrently for one
// session (even across the streams that carry it after reconnects);
// different sessions call it concurrently. Submit and Verify are called
// concurrently, each from its call's goroutine. Every method must return
// promptly once ctx is done: ctx ends when the caller goes away or the
// server stops.
//
// Errors: an error wrapping auth.ErrInvalidToken becomes UNAUTHENTICATED
// with the error's text (the caller maps it back to auth.ErrInvalidToken
// with the same text, so that text must be fit for the connecting client);
// auth.ErrUnavailable, storage.ErrUnavailable or ErrUnavailable become
// UNAVAILABLE (ErrUnavailable on the caller); context errors keep their
// meaning; anything else reaches the caller as ErrRejected with the
// error's text.
type Handler interface {
	// Deliver hands one batch of a delivery session to the local
	// connections: its deliveries (those the session has not delivered
	// already: a batch sent again after a reconnect arrives once), then
	// its cursor. The batch is the handler's to keep. A nil error acks it;
	// an error is reported to the sender, which does not send it again.
	Deliver(ctx context.Context, b Batch) error
	// Submit routes messages that are already stored durably, from the
	// collect node from, whose cursor is cursor ("" if it sent none). The
	// slice and the messages are the handler's to keep. ms may be empty
	// (a cursor heartbeat).
	Submit(ctx context.Context, from Source, ms []*storage.Message, cursor string) error
	// Verify turns a connection token into an identity.
	Verify(ctx context.Context, token string) (auth.Identity, error)
}

// Batch is what a delivery session brings in one DeliverBatch.
type Batch struct {
	// Session is the session the batch belongs to, as its sender
	// announced it when the stream opened.
	Session SessionInfo
	// Deliveries are the new deliveries, in order.
	Deliveries []Delivery
	// Cursor, if set, follows the deliveries: every message at or below
	// it that the sender routes here has come in this session.
	Cursor string
	// End: the sender is leaving; nothing more comes in this session.
	End bool
	// Hole: deliveries of this session were skipped (the sender lost
	// them without starting a new session; it should not happen). The
	// handler should recover everything since the session's last cursor.
	Hole bool
}

// SessionInfo names a delivery session and what its sender dropped
// before it (see rpcpb.Session).
type SessionInfo struct {
	Source   Source
	Number   uint64
	Prev     uint64
	GapUsers []string
	GapAll   bool
	// Cursors: the sender is a dispatch node; its cursors count.
	Cursors bool
}

// State is where a Server is in its life.
type State int32

// States, in order.
const (
	StateNew     State = iota // built, not started
	StateRunning              // serving
	StateStopped              // shut down (or closed); final
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateRunning:
		return "running"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Keepalive on the internal connections: a client pings an idle connection
// every clientPing and a server every serverPing; a connection whose ping
// is not answered within pingTimeout is dropped, so a peer that vanished
// without closing its TCP connection is noticed within seconds. The server
// lets clients ping as often as every minPingInterval.
const (
	clientPing      = 10 * time.Second
	serverPing      = 30 * time.Second
	pingTimeout     = 5 * time.Second
	minPingInterval = 5 * time.Second
)

// Server serves the internal RPC port. Build it with [NewServer].
type Server struct {
	cfg   ServerConfig
	log   *slog.Logger
	m     *serverMetrics
	guard *guard

	sessions sessionTable

	mu       sync.Mutex
	state    State
	gs       *grpc.Server
	ln       net.Listener
	draining chan struct{}  // closed by Shutdown: Deliver streams end after their current batch
	done     chan struct{}  // closed when Shutdown has finished
	wg       sync.WaitGroup // the serve goroutine and the streams' receivers
	calls    sync.WaitGroup // calls to the handler in progress
}

// NewServer checks cfg and builds a server; it starts nothing.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newServerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, m: m, draining: make(chan struct{}), done: make(chan struct{})}
	s.guard = &guard{want: []byte(credential(cfg.Secret)), reject: s.refused}
	return s, nil
}

// State reports where the server is in its life.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Start listens on Addr and serves in a goroutine. Starting a running
// server does nothing; starting a stopped one fails with ErrClosed.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case StateRunning:
		return nil
	case StateStopped:
		return fmt.Errorf("rpc server: start: %w", ErrClosed)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rpc server: listen on %s: %w", s.cfg.Addr, err)
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxRecvMsgBytes),
		grpc.ChainUnaryInterceptor(s.guard.unary),
		grpc.ChainStreamInterceptor(s.guard.stream),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: serverPing, Timeout: pingTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minPingInterval, PermitWithoutStream: true}),
		grpc.ForceServerCodecV2(newCodec()),
	}
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	s.gs = grpc.NewServer(opts...)
	rpcpb.RegisterNodeServer(s.gs, &service{s: s})
	s.ln = ln
	s.state = StateRunning
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("rpc server stopped serving", "addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("rpc server listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil)
	return nil
}

// Addr returns the address the server listens on once started (with the
// port chosen for ":0"), and the configured one before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// Shutdown stops the server: it stops accepting, ends every Deliver stream
// after the batch in hand (the senders fail what they have not had acked),
// and waits for calls in progress while ctx lasts; then it cuts whatever
// is left. It waits for every goroutine it started. The error says whether
// the stop was forced, or handler calls outlived ctx. Calling it again, or
// before Start, does nothing.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	prev := s.state
	s.state = StateStopped
	s.mu.Unlock()
	switch prev {
	case StateNew:
		close(s.done)
		return nil
	case StateStopped:
		select {
		case <-s.done:
		case <-ctx.Done():
		}
		return nil
	}
	defer close(s.done)
	close(s.draining)
	stopped := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(stopped)
	}()
	var errs []error
	select {
	case <-stopped:
	case <-ctx.Done():
		s.gs.Stop() // cancels every call's ctx and closes the connections
		<-stopped
		errs = append(errs, fmt.Errorf("rpc server: forced stop: %w", context.Cause(ctx)))
	}
	s.wg.Wait()
	calls := make(chan struct{})
	go func() {
		s.calls.Wait()
		close(calls)
	}()
	select {
	case <-calls:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("rpc server: handler calls still running after stop: %w", context.Cause(ctx)))
	}
	s.log.Info("rpc server stopped", "addr", s.ln.Addr().String())
	return errors.Join(errs...)
}

// enter counts a handler call in, and for a stream its receiver goroutine,
// unless the server is stopping.
func (s *Server) enter(stream bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateRunning {
		return false
	}
	s.calls.Add(1)
	if stream {
		s.wg.Add(1)
	}
	return true
}

func (s *Server) refused(ctx context.Context, method string) {
	s.m.refused.Inc()
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	s.log.Warn("rpc call refused: missing or wrong cluster credential", "method", method, "from", from)
}

var errStopping = status.Error(codes.Unavailable, "rpc: server stopping")

// service adapts the Handler to the generated interface.
type service struct {
	rpcpb.UnimplementedNodeServer
	s *Server
}

func (v *service) Deliver(stream grpc.BidiStreamingServer[rpcpb.DeliverBatch, rpcpb.DeliverAck]) error {
	s := v.s
	if !s.enter(true) {
		return errStopping
	}
	defer s.calls.Done()
	ctx := stream.Context()
	in := make(chan *rpcpb.DeliverBatch, 1) // one batch decoded ahead of the handler
	recvErr := make(chan error, 1)
	go func() {
		defer s.wg.Done()
		for {
			b, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case in <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	// Accept the stream at once, so the client knows its credential
	// passed before it sends anything.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	s.m.streams.Inc()
	defer s.m.streams.Dec()
	var sess *sessionState
	for {
		select {
		case b := <-in:
			if sess == nil {
				h := b.GetSession()
				if h == nil || h.GetSourceId() == "" {
					return status.Error(codes.InvalidArgument, "rpc: the first batch of a Deliver stream must name its session")
				}
				sess = s.sessions.get(h)
			}
			ack, end := s.deliver(ctx, sess, b)
			if err := stream.Send(ack); err != nil {
				return err
			}
			if end {
				s.sessions.remove(sess)
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil // the client closed its side
			}
			return err
		case <-s.draining:
			return nil
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// deliver hands one batch to the handler, minus the deliveries the
// session already delivered, under the session's lock.
func (s *Server) deliver(ctx context.Context, sess *sessionState, b *rpcpb.DeliverBatch) (*rpcpb.DeliverAck, bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.used.Store(time.Now().UnixNano())
	ack := &rpcpb.DeliverAck{Seq: b.GetSeq()}
	pds := b.GetDeliveries()
	first := b.GetFirst()
	hole := false
	if len(pds) > 0 {
		if !sess.started && first > sess.next {
			// A session this server has not seen (the sender's is older
			// than this process: the receiver restarted at its address):
			// nothing here predates it, so it starts where it is.
			sess.next = first
		}
		switch {
		case first > sess.next:
			hole = true
		case first < sess.next:
			skip := min(sess.next-first, uint64(len(pds)))
			s.m.duplicates.Add(float64(skip))
			pds = pds[skip:]
			first += skip
		}
		if end := first + uint64(len(pds)); end > sess.next {
			sess.next = end
		}
	}
	ds := deliveriesFromProto(pds)
	s.m.batches.Inc()
	s.m.deliveries.Add(float64(len(ds)))
	if len(ds) == 0 && b.GetCursor() == "" && !b.GetEnd() && !hole && sess.started {
		return ack, false // a resend of what was handled, or an empty header
	}
	sess.started = true
	err := s.cfg.Handler.Deliver(ctx, Batch{Session: sess.info, Deliveries: ds, Cursor: b.GetCursor(), End: b.GetEnd(), Hole: hole})
	if err != nil {
		ack.Error = err.Error()
	}
	return ack, b.GetEnd()
}

// sessionTable holds, per delivery session, the number of the next
// delivery expected, so that batches sent again are delivered once.
type sessionTable struct {
	mu sync.Mutex
	m  map[sessionKey]*sessionState
}

type sessionKey struct {
	id, incarnation string
	number          uint64
}

type sessionState struct {
	key     sessionKey
	info    SessionInfo
	mu      sync.Mutex   // serializes the handler calls of the session
	next    uint64       // the session-wide number of the next new delivery
	started bool         // the handler has seen the session
	used    atomic.Int64 // when a batch last came, Unix ns
}

// sessionIdle is how long a session nobody sends on is remembered.
const sessionIdle = 10 * time.Minute

func (t *sessionTable) get(h *rpcpb.Session) *sessionState {
	k := sessionKey{h.GetSourceId(), h.GetSourceIncarnation(), h.GetNumber()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[sessionKey]*sessionState)
	}
	if st := t.m[k]; st != nil {
		return st
	}
	now := time.Now()
	for ok, o := range t.m {
		// Older sessions of the same sender are over; so is any session
		// nobody sent on for a long time.
		if (ok.id == k.id && ok.incarnation == k.incarnation && ok.number < k.number) || now.Sub(time.Unix(0, o.used.Load())) > sessionIdle {
			delete(t.m, ok)
		}
	}
	st := &sessionState{key: k, next: 1, info: SessionInfo{
		Source: Source{ID: k.id, Incarnation: k.incarnation}, Number: k.number, Prev: h.GetPrev(),
		GapUsers: h.GetGapUsers(), GapAll: h.GetGapAll(), Cursors: h.GetCursors(),
	}}
	st.used.Store(now.UnixNano())
	t.m[k] = st
	return st
}

func (t *sessionTable) remove(st *sessionState) {
	t.mu.Lock()
	if t.m[st.key] == st {
		delete(t.m, st.key)
	}
	t.mu.Unlock()
}

func (v *service) Submit(ctx context.Context, req *rpcpb.SubmitRequest) (*rpcpb.SubmitReply, error) {
	s := v.s
	if !s.enter(false) {
		return nil, errStopping
	}
	defer s.calls.Done()
	from := Source{ID: req.GetSourceId(), Incarnation: req.GetSourceIncarnation()}
	if err := s.cfg.Handler.Submit(ctx, from, messagesFromProto(req.GetMessages()), req.GetCursor()); err != nil {
		return nil, toStatus(err)
	}
	return &rpcpb.SubmitReply{}, nil
}

func (v *service) Verify(ctx context.Context, req *rpcpb.VerifyRequest) (*rpcpb.VerifyReply, error) {
	s := v.s
	if !s.enter(false) {
		return nil, errStopping
	}
	defer s.calls.Done()
	id, err := s.cfg.Handler.Verify(ctx, req.GetToken())
	if err != nil {
		return nil, toStatus(err)
	}
	r := &rpcpb.VerifyReply{User: id.User}
	if !id.Expires.IsZero() {
		r.ExpiresUnix = id.Expires.Unix()
	}
	return r, nil
}
