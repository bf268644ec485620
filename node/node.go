package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
)

// State is a node's lifecycle state.
type State int32

// Node states, in order.
const (
	StateNew      State = iota // built, not started
	StateRunning               // serving
	StateDraining              // not ready; sending clients elsewhere
	StateStopped               // shut down
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateRunning:
		return "running"
	case StateDraining:
		return "draining"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Node is one Herald process: the roles its Config names, sharing one
// public HTTP port.
type Node struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	reg     *prometheus.Registry
	self    storage.Node
	ids     *storage.IDGenerator

	edge     *edge.Server // push role
	presence *presence    // push role
	dispatch *dispatcher

	ln   net.Listener
	http *http.Server

	state    atomic.Int32
	mu       sync.Mutex // serializes Start, Drain, Shutdown
	stop     chan struct{}
	bg       sync.WaitGroup
	httpDone chan struct{}
}

// New validates cfg and builds the node. It starts nothing.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeID)
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	n := &Node{
		cfg: cfg, log: log, metrics: m, reg: reg,
		self: storage.Node{ID: cfg.NodeID, Incarnation: hex.EncodeToString(inc[:])},
		ids:  storage.NewIDGenerator(nil),
		stop: make(chan struct{}),
	}
	n.dispatch = newDispatcher(n)
	if cfg.Has(RolePush) {
		n.presence = newPresence(n, n.self)
		ec := cfg.Edge
		ec.NodeID = cfg.NodeID
		ec.MaxMessageBytes = cfg.MaxMessageBytes
		ec.Auth = edgeAuth{cfg.Auth}
		ec.Replayer = cfg.Messages
		ec.Listener = n.presence
		ec.Logger = log.With("part", "edge")
		ec.Registerer = reg
		if n.edge, err = edge.New(ec); err != nil {
			return nil, err
		}
	}
	n.http = &http.Server{Handler: n.routes(), ReadHeaderTimeout: cfg.Edge.HandshakeTimeout, MaxHeaderBytes: cfg.Edge.MaxHeaderBytes}
	if n.edge != nil {
		n.http = n.edge.HTTPServer(n.routes())
	}
	return n, nil
}

// edgeAuth adapts an Authenticator to the edge's interface.
type edgeAuth struct{ a Authenticator }

func (e edgeAuth) Authenticate(ctx context.Context, token string) (edge.Identity, error) {
	id, err := e.a.Authenticate(ctx, token)
	if errors.Is(err, auth.ErrUnavailable) {
		return edge.Identity{}, fmt.Errorf("%w: %v", edge.ErrAuthUnavailable, err)
	}
	if err != nil {
		return edge.Identity{}, err
	}
	return edge.Identity{User: id.User, Expires: id.Expires}, nil
}

// State returns the node's lifecycle state.
func (n *Node) State() State { return State(n.state.Load()) }

// ID returns the node's ID and incarnation.
func (n *Node) ID() storage.Node { return n.self }

// Addr returns the public address the node listens on, once started.
func (n *Node) Addr() string {
	if n.ln == nil {
		return ""
	}
	return n.ln.Addr().String()
}

// Edge returns the WebSocket edge, or nil without the push role.
func (n *Node) Edge() *edge.Server { return n.edge }

// Start listens and starts the roles in dependency order: bindings, edge,
// dispatch, sweeper, then the HTTP server.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.State() != StateNew {
		return errors.New("node: already started")
	}
	ln, err := net.Listen("tcp", n.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", n.cfg.Addr, err)
	}
	n.ln = ln
	if n.presence != nil {
		if err := n.presence.start(ctx); err != nil {
			ln.Close()
			return fmt.Errorf("start presence: %w", err)
		}
	}
	if n.edge != nil {
		if err := n.edge.Start(); err != nil {
			ln.Close()
			return fmt.Errorf("start edge: %w", err)
		}
	}
	n.dispatch.start()
	if n.cfg.Has(RoleCollect) {
		n.bg.Add(1)
		go n.sweep()
	}
	n.httpDone = make(chan struct{})
	go func() {
		defer close(n.httpDone)
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server failed", "err", err)
		}
	}()
	n.state.Store(int32(StateRunning))
	n.log.Info("herald node started", "addr", ln.Addr().String(), "roles", fmt.Sprint(n.cfg.Roles), "incarnation", n.self.Incarnation)
	return nil
}

// sweep deletes expired messages periodically.
func (n *Node) sweep() {
	defer n.bg.Done()
	t := time.NewTicker(n.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.SweepInterval)
		deleted, err := n.cfg.Messages.DeleteExpired(ctx, time.Now())
		cancel()
		if err != nil {
			n.log.Warn("sweeping expired messages failed", "err", err)
			continue
		}
		n.metrics.swept.Add(float64(deleted))
	}
}

// Drain makes the node not ready and sends its WebSocket clients to
// reconnect elsewhere, spread over DrainSpread. The HTTP API keeps serving
// until Shutdown. It returns when the clients are gone, DrainTimeout
// passes, or ctx ends.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.State() != StateRunning {
		return nil
	}
	n.state.Store(int32(StateDraining))
	n.log.Info("draining")
	if n.edge == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	if err := n.edge.Drain(ctx, nil, n.cfg.DrainSpread); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("drain edge: %w", err)
	}
	return nil
}

// Shutdown stops the roles in reverse order, unbinds this node's users,
// and closes the stores. It is idempotent; it returns the joined errors.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	prev := n.State()
	if prev == StateStopped {
		return nil
	}
	n.state.Store(int32(StateStopped))
	var errs []error
	if prev != StateNew {
		if err := n.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
		<-n.httpDone
	}
	if n.edge != nil {
		if err := n.edge.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("edge: %w", err))
		}
	}
	if prev != StateNew {
		n.dispatch.shutdown()
		close(n.stop)
		n.bg.Wait()
		if n.presence != nil {
			if err := n.presence.shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("unbind: %w", err))
			}
		}
	}
	if n.cfg.Messages != nil {
		if err := n.cfg.Messages.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close message store: %w", err))
		}
	}
	if n.cfg.Bindings != nil {
		if err := n.cfg.Bindings.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close binding store: %w", err))
		}
	}
	n.log.Info("herald node stopped")
	return errors.Join(errs...)
}
