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
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
)

// NodeInfo describes a cluster member (GET /v1/nodes).
type NodeInfo struct {
	ID          string `json:"id"`
	Incarnation string `json:"incarnation"`
	Roles       []Role `json:"roles"`
	PublicURL   string `json:"public_url,omitempty"`
	RPCAddr     string `json:"rpc_addr,omitempty"`
	GossipAddr  string `json:"gossip_addr,omitempty"`
	State       string `json:"state"`
	Version     string `json:"version,omitempty"`
	Connections *int   `json:"connections,omitempty"`
}

func (n *Node) localInfo() NodeInfo {
	info := NodeInfo{ID: n.self.ID, Incarnation: n.self.Incarnation, Roles: n.cfg.Roles, PublicURL: n.public,
		State: n.State().String(), Version: n.cfg.Version}
	if n.edge != nil {
		c := n.edge.Connections()
		info.Connections = &c
	}
	return info
}

// advertised turns a listen address into one others can reach: a missing
// or unspecified host becomes advertiseHost, else the host name.
func advertised(listen, advertiseHost string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = advertiseHost
		if host == "" {
			if h, err := os.Hostname(); err == nil {
				host = h
			}
		}
	}
	return net.JoinHostPort(host, port)
}

// wsURL turns a public base URL (http or https) into its WebSocket URL.
func wsURL(public string) string {
	switch {
	case strings.HasPrefix(public, "https://"):
		return "wss://" + strings.TrimPrefix(public, "https://") + "/ws"
	case strings.HasPrefix(public, "http://"):
		return "ws://" + strings.TrimPrefix(public, "http://") + "/ws"
	}
	return public + "/ws"
}

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
	tracker *tracker // issues message IDs; this node's routing cursor

	edge     *edge.Server // push role
	presence *presence    // push role
	sources  *sources     // push role: the cursor
	dispatch *dispatcher
	resolver *resolver // collect role
	skew     *skewCheck
	cluster  *cluster // nil when standalone
	auth     Authenticator
	public   string // PublicURL, resolved at Start

	ln   net.Listener
	http *http.Server

	state    atomic.Int32
	mu       sync.Mutex   // serializes Start, Drain, Shutdown
	postsMu  sync.RWMutex // guards the draining state against POSTs starting
	posts    sync.WaitGroup
	stop     chan struct{}
	bg       sync.WaitGroup
	httpDone chan struct{}
}

// beginPost counts a POST in unless the node no longer takes them.
func (n *Node) beginPost() bool {
	n.postsMu.RLock()
	defer n.postsMu.RUnlock()
	if n.State() != StateRunning {
		return false
	}
	n.posts.Add(1)
	return true
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
		self:    storage.Node{ID: cfg.NodeID, Incarnation: hex.EncodeToString(inc[:])},
		tracker: newTracker(cfg.Clock),
		stop:    make(chan struct{}),
	}
	n.auth = cfg.Auth
	if !cfg.Standalone {
		if n.cluster, err = newCluster(n); err != nil {
			return nil, err
		}
		if n.auth == nil && cfg.Has(RolePush) {
			n.auth = &clusterAuth{n: n} // verify with the cluster's auth nodes
		}
	}
	n.dispatch = n.newDispatcher()
	if cfg.Has(RoleCollect) {
		n.resolver = newResolver(cfg.Messages,
			func(m *storage.Message) error { return n.dispatch.submit(context.Background(), m, true) },
			n.tracker.Done, log.With("part", "resolver"), m, cfg.MaxUnresolved)
	}
	n.skew = &skewCheck{n: n}
	if cfg.Has(RolePush) {
		n.sources = newSources(n.self.ID, log.With("part", "cursor"), m)
		if cfg.Has(RoleDispatch) || n.cluster == nil {
			n.sources.local = n.tracker.Cursor
		}
		if n.cluster != nil {
			n.sources.lag = cfg.CursorLag
			n.sources.leaseHolder = cfg.Bindings.LeaseHolder
		}
		n.sources.appendGrace = cfg.AppendGrace
		n.presence = newPresence(n.self, cfg.Bindings, n.sources, log.With("part", "presence"), m, &cfg)
		ec := cfg.Edge
		ec.NodeID = cfg.NodeID
		ec.MaxMessageBytes = cfg.MaxMessageBytes
		ec.Auth = edgeAuth{n.auth}
		ec.Replayer = cfg.Messages
		ec.Listener = n.presence
		ec.Logger = log.With("part", "edge")
		ec.Registerer = reg
		if n.edge, err = edge.New(ec); err != nil {
			return nil, err
		}
		n.presence.edge = n.edge
		n.sources.setEdge(n.edge)
		n.dispatch.local = n.edge
		n.dispatch.cursor = n.sources.Cursor
	}
	n.http = &http.Server{Handler: n.routes(), ReadHeaderTimeout: cfg.Edge.HandshakeTimeout, MaxHeaderBytes: cfg.Edge.MaxHeaderBytes}
	if n.edge != nil {
		n.http = n.edge.HTTPServer(n.routes())
	}
	return n, nil
}

// newDispatcher builds the dispatcher for the node's roles.
func (n *Node) newDispatcher() *dispatcher {
	d := &dispatcher{
		self: n.self.ID, in: make(chan queued, n.cfg.DispatchQueue), tracker: n.tracker,
		log: n.log.With("part", "dispatch"), m: n.metrics, cursorInterval: n.cfg.CursorInterval,
		stop: make(chan struct{}), drained: make(chan struct{}),
	}
	if n.cluster == nil {
		return d
	}
	if !n.cfg.Has(RoleDispatch) {
		d.handOff = &clusterSubmitter{n: n}
		return d
	}
	d.members = n.cluster
	d.locator = &locator{
		self: n.self.ID, bindings: n.cfg.Bindings, members: n.cluster, timeout: n.cfg.LookupTimeout,
		onLookupError: func(err error) {
			n.metrics.lookupErrors.Inc()
			n.log.Debug("binding lookup failed; sending to every push node", "err", err)
		},
		onGuess: func(k int) { n.metrics.ringRouted.Add(float64(k)) },
	}
	d.send = newPeerSender(n.cluster.rpc, n.cluster.rpcAddr, n.cfg.DeferTimeout, maxDeferred)
	d.send.onDefer = n.metrics.deferred.Inc
	d.send.onDrop = func(k int) { n.metrics.deferDropped.Add(float64(k)) }
	return d
}

// maxDeferred bounds the deliveries waiting for unknown nodes.
const maxDeferred = 100000

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

// PublicURL is the base URL advertised to the cluster, once started.
func (n *Node) PublicURL() string { return n.public }

// RPCAddr is the internal RPC address, once started ("" when standalone).
func (n *Node) RPCAddr() string {
	if n.cluster == nil {
		return ""
	}
	return n.cluster.server.Addr()
}

// GossipAddr is the gossip address, once started ("" when standalone).
func (n *Node) GossipAddr() string {
	if n.cluster == nil || n.cluster.gossip == nil {
		return ""
	}
	return n.cluster.gossip.Addr()
}

// Members returns the live cluster members this node knows (itself alone
// when standalone).
func (n *Node) Members() []NodeInfo {
	if n.cluster == nil {
		return []NodeInfo{n.localInfo()}
	}
	var out []NodeInfo
	for _, m := range n.cluster.all() {
		roles := make([]Role, len(m.Roles))
		for i, r := range m.Roles {
			roles[i] = Role(r)
		}
		out = append(out, NodeInfo{ID: m.ID, Incarnation: m.Incarnation, Roles: roles,
			PublicURL: m.PublicURL, RPCAddr: m.RPCAddr, GossipAddr: m.Addr, State: m.State, Version: m.Version})
	}
	return out
}

// Kill stops the node as a crash would, for tests and chaos drills: no
// gossip leave, no close frames, no unbinding, no flushing, no session
// end. The process state is released (goroutines stop, stores close).
func (n *Node) Kill() {
	n.mu.Lock()
	if n.State() == StateStopped {
		n.mu.Unlock()
		return
	}
	prev := n.State()
	n.state.Store(int32(StateStopped))
	n.mu.Unlock()
	if prev == StateNew {
		return
	}
	_ = n.http.Close()
	<-n.httpDone
	if n.edge != nil {
		n.edge.Abort()
	}
	close(n.stop)
	if n.cluster != nil {
		n.cluster.kill() // before dispatch stops: nothing more leaves
	}
	n.dispatch.shutdown()
	if n.resolver != nil {
		n.resolver.shutdown()
	}
	if n.presence != nil {
		n.presence.abort()
	}
	if n.sources != nil {
		n.sources.shutdown()
	}
	n.bg.Wait()
	_ = n.cfg.Messages.Close()
	_ = n.cfg.Bindings.Close()
	n.log.Info("herald node killed")
}

// Start listens and starts the roles in dependency order: cluster (RPC
// and gossip), presence (the lease), edge, dispatch, resolver, sweeper,
// then the HTTP server. If a step fails, what started is stopped again,
// in reverse.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.State() != StateNew {
		return errors.New("node: already started")
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	ln, err := net.Listen("tcp", n.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", n.cfg.Addr, err)
	}
	undo = append(undo, func() { ln.Close() })
	n.ln = ln
	n.public = n.cfg.PublicURL
	if n.public == "" {
		n.public = "http://" + advertised(ln.Addr().String(), n.cfg.Gossip.AdvertiseAddr)
	}
	if n.cluster != nil {
		if err := n.cluster.start(ctx, n.public); err != nil {
			_ = n.cluster.shutdown(context.Background())
			return fmt.Errorf("join cluster: %w", err)
		}
		undo = append(undo, func() { close(n.stop); n.bg.Wait(); _ = n.cluster.shutdown(context.Background()) })
	}
	if n.presence != nil {
		if err := n.presence.start(ctx); err != nil {
			return fmt.Errorf("start presence: %w", err)
		}
		undo = append(undo, n.presence.abort)
		n.sources.run()
		undo = append(undo, n.sources.shutdown)
	}
	if n.edge != nil {
		if err := n.edge.Start(); err != nil {
			return fmt.Errorf("start edge: %w", err)
		}
	}
	n.dispatch.start()
	if n.resolver != nil {
		n.resolver.start()
	}
	if n.cfg.Has(RoleCollect) {
		n.bg.Add(1)
		go n.sweep()
		if n.dispatch.handOff != nil {
			n.bg.Add(1)
			go n.heartbeat()
		}
	}
	n.skew.start()
	n.httpDone = make(chan struct{})
	go func() {
		defer close(n.httpDone)
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server failed", "err", err)
		}
	}()
	n.state.Store(int32(StateRunning))
	n.log.Info("herald node started", "addr", ln.Addr().String(), "roles", fmt.Sprint(n.cfg.Roles),
		"gossip", n.GossipAddr(), "rpc", n.RPCAddr(), "public_url", n.public, "incarnation", n.self.Incarnation)
	return nil
}

// heartbeat sends a collect-only node's cursor to the dispatch nodes.
func (n *Node) heartbeat() {
	defer n.bg.Done()
	t := time.NewTicker(n.cfg.CursorInterval)
	defer t.Stop()
	s := n.dispatch.handOff.(*clusterSubmitter)
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CursorInterval)
		s.heartbeat(ctx)
		cancel()
	}
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

// Drain takes the node out of service without losing a message:
//
//  1. it becomes not ready and refuses new POSTs (503 draining);
//  2. it leaves the cluster: the others stop routing to it and steer
//     clients elsewhere;
//  3. it tells its WebSocket clients to reconnect to their ring owner once
//     it is gone, spread over DrainSpread (they resume from their cursor);
//  4. it waits for the POSTs in progress, routes every accepted message,
//     settles the appends whose outcome was lost, waits until every push
//     node has acked what it was sent, and ends its delivery sessions, so
//     the push nodes stop holding their cursor for it.
//
// It returns when done, when DrainTimeout passes, or when ctx ends. Cut
// short, it skips ending its sessions: the others then treat it as a node
// that died, and recover from the store.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.State() != StateRunning {
		return nil
	}
	n.postsMu.Lock()
	n.state.Store(int32(StateDraining))
	n.postsMu.Unlock()
	n.log.Info("draining")
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	if n.presence != nil {
		n.presence.setDraining()
	}
	if n.cluster != nil {
		if err := n.cluster.leave(ctx); err != nil {
			errs = append(errs, fmt.Errorf("leave cluster: %w", err))
		}
	}
	edgeDone := make(chan error, 1)
	if n.edge != nil {
		go func() { edgeDone <- n.edge.Drain(ctx, n.reconnectHint, n.cfg.DrainSpread) }()
	} else {
		edgeDone <- nil
	}
	clean := true
	if err := waitGroup(ctx, &n.posts); err != nil {
		errs = append(errs, fmt.Errorf("posts in progress: %w", err))
		clean = false
	}
	if n.resolver != nil {
		if err := n.resolver.drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("settle lost appends: %d left: %w", n.resolver.pending(), err))
			clean = false
		}
	}
	if err := n.dispatch.drain(ctx); err != nil {
		errs = append(errs, fmt.Errorf("dispatch: %w", err))
		clean = false
	}
	if n.cluster != nil && clean && n.cfg.Has(RoleDispatch) {
		if err := n.cluster.endSessions(ctx); err != nil {
			errs = append(errs, fmt.Errorf("end delivery sessions: %w", err))
		}
	}
	if err := <-edgeDone; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		errs = append(errs, fmt.Errorf("drain edge: %w", err))
	}
	return errors.Join(errs...)
}

// waitGroup waits for wg or ctx.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reconnectHint is the WebSocket URL of user's ring owner once this node
// has left, or "" to let the client choose.
func (n *Node) reconnectHint(user string) string {
	if n.cluster == nil {
		return ""
	}
	m, ok := n.cluster.ownerWithout(user, n.self.ID)
	if !ok || m.PublicURL == "" {
		return ""
	}
	return wsURL(m.PublicURL)
}

// Shutdown stops the roles in reverse order: HTTP, the edge, dispatch
// (after routing what is queued), the resolver, presence (unbinding this
// node's users), the cursor, the cluster; then it closes the stores. It is
// idempotent; it returns the joined errors.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	prev := n.State()
	if prev == StateStopped {
		return nil
	}
	n.postsMu.Lock()
	n.state.Store(int32(StateStopped))
	n.postsMu.Unlock()
	var errs []error
	phase := time.Now()
	step := func(name string) {
		n.log.Debug("shutdown step done", "step", name, "took", time.Since(phase))
		phase = time.Now()
	}
	if prev != StateNew {
		if err := n.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
		<-n.httpDone
		step("http")
	}
	if n.edge != nil {
		if err := n.edge.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("edge: %w", err))
		}
		step("edge")
	}
	if prev != StateNew {
		n.dispatch.shutdown()
		if n.resolver != nil {
			n.resolver.shutdown()
		}
		if n.cluster != nil {
			// What dispatch routed last goes out before the connections close.
			if err := n.cluster.rpc.Flush(ctx); err != nil {
				errs = append(errs, fmt.Errorf("flush deliveries: %w", err))
			}
		}
		close(n.stop)
		step("dispatch")
		if n.presence != nil {
			if err := n.presence.shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("unbind: %w", err))
			}
			n.sources.shutdown()
			step("unbind")
		}
		if n.cluster != nil {
			if err := n.cluster.shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
			step("cluster")
		}
		n.bg.Wait()
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
