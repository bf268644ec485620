package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is the lifecycle state of a Gossip.
type State int32

// Gossip states, in order.
const (
	StateNew      State = iota // built, not started
	StateRunning               // a member of the cluster
	StateLeaving               // broadcasting its leave
	StateLeft                  // left the cluster; still running until Shutdown
	StateShutdown              // stopped
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateRunning:
		return "running"
	case StateLeaving:
		return "leaving"
	case StateLeft:
		return "left"
	case StateShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Errors of the lifecycle.
var (
	// ErrStarted is returned by Start on a Gossip that is not new.
	ErrStarted = errors.New("gossip: already started")
	// ErrNotRunning is returned by Leave and UpdateMeta when the Gossip is
	// not running.
	ErrNotRunning = errors.New("gossip: not running")
	// ErrBroadcastTimeout is returned by Leave when its broadcast was not
	// sent before the timeout. The node has left locally anyway; the leave
	// spreads by gossip while the node keeps running, and otherwise the
	// others detect it as failed.
	ErrBroadcastTimeout = errors.New("gossip: broadcast not sent before the timeout")
)

// Gossip is this node's membership in the cluster. Build it with New, start
// it with Start, read Events from one goroutine, and stop it with Leave and
// Shutdown. Its methods are safe for concurrent use.
type Gossip struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	roster  *roster
	events  chan Event

	meta atomic.Pointer[localMeta]
	addr atomic.Pointer[string]

	mu       sync.Mutex // serializes Start, UpdateMeta, Leave and Shutdown
	state    atomic.Int32
	ml       *memberlist.Memberlist
	ctx      context.Context // cancelled by Shutdown: stops the rejoin loop
	cancel   context.CancelFunc
	loops    sync.WaitGroup // the rejoin loop
	fwdStop  chan struct{}  // closed after everything else stopped
	fwd      sync.WaitGroup // the event forwarder
	done     chan struct{}  // closed when Shutdown is complete
	shutdown sync.Once
}

// localMeta is the Meta this node advertises and its encoding.
type localMeta struct {
	meta Meta
	enc  []byte
}

// New validates cfg and builds a Gossip. It starts nothing.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Seeds = append([]string(nil), cfg.Seeds...)
	cfg.ClusterSecret = append([]byte(nil), cfg.ClusterSecret...)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	enc, err := cfg.Meta.Encode()
	if err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:     cfg,
		log:     log,
		metrics: m,
		roster:  newRoster(),
		events:  make(chan Event, cfg.EventBuffer),
		fwdStop: make(chan struct{}),
		done:    make(chan struct{}),
	}
	g.meta.Store(&localMeta{meta: cfg.Meta.clone(), enc: enc})
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g, nil
}

// State returns the lifecycle state.
func (g *Gossip) State() State { return State(g.state.Load()) }

// Events returns the membership events, in the order memberlist reported
// them per member, with bursts coalesced (see Event and the package
// documentation). Read it from one goroutine and keep reading until it is
// closed, which Shutdown does last; events still queued then are dropped.
// This node's own Join normally comes first.
func (g *Gossip) Events() <-chan Event { return g.events }

// Addr returns the gossip host:port other nodes reach this one at, once
// started: with BindPort 0, the port actually bound.
func (g *Gossip) Addr() string {
	if a := g.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Local returns this node as a member: its current Meta and address.
func (g *Gossip) Local() Member {
	return Member{Meta: g.meta.Load().meta.clone(), Addr: g.Addr()}
}

// Members returns the live members (alive or suspected, not left or dead),
// this node included while it has not left, sorted by ID and incarnation.
// Two members may share an ID: a restarted node and its previous life not
// yet declared dead. It returns nil before Start and after Shutdown.
func (g *Gossip) Members() []Member {
	if s := g.State(); s == StateNew || s == StateShutdown {
		return nil
	}
	return g.roster.list()
}

// Start joins the cluster: it starts memberlist, contacts the seeds, and
// starts the event forwarder and the rejoin loop. Unreachable seeds are
// not an error: the node runs as a cluster of its own and keeps trying
// them every RejoinInterval. Start waits for the first join attempt until
// ctx ends; after that the attempt goes on in the background.
func (g *Gossip) Start(ctx context.Context) error {
	g.mu.Lock()
	if g.State() != StateNew {
		g.mu.Unlock()
		return ErrStarted
	}
	if err := g.createLocked(); err != nil {
		g.mu.Unlock()
		return err
	}
	g.state.Store(int32(StateRunning))
	g.fwd.Add(1)
	go g.forward()
	joined := make(chan struct{})
	g.loops.Add(1)
	go g.rejoinLoop(joined)
	g.mu.Unlock()

	l := g.Local()
	g.log.Info("gossip started", "addr", l.Addr, "node", l.NodeName(), "seeds", len(g.cfg.Seeds),
		"encrypted", len(g.cfg.ClusterSecret) > 0, "profile", g.cfg.Profile)
	if len(g.cfg.ClusterSecret) == 0 {
		g.log.Warn("gossip is not encrypted: no cluster secret (development only)")
	}
	select {
	case <-joined:
	case <-ctx.Done():
		g.log.Info("still joining seeds in the background", "err", ctx.Err())
	}
	return nil
}

// createLocked creates the memberlist (and its network transport unless
// Config.Transport is set).
func (g *Gossip) createLocked() error {
	d := &delegate{g}
	mc := g.cfg.memberlistConfig(d, g.log)
	var nt *memberlist.NetTransport
	if mc.Transport == nil {
		var err error
		if nt, err = newNetTransport(mc); err != nil {
			return fmt.Errorf("gossip: listen on %s: %w", net.JoinHostPort(mc.BindAddr, fmt.Sprint(mc.BindPort)), err)
		}
		mc.Transport = nt
		if g.cfg.WrapTransport != nil {
			mc.Transport = g.cfg.WrapTransport(nt)
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if nt != nil {
			_ = nt.Shutdown() // memberlist does not on every error path
		}
		return fmt.Errorf("gossip: start memberlist: %w", err)
	}
	g.ml = ml
	// The delegate saw this node join inside Create, with the address
	// memberlist advertises.
	addr := ""
	for _, m := range g.roster.list() {
		if m.NodeName() == mc.Name {
			addr = m.Addr
		}
	}
	if addr == "" {
		addr = ml.LocalNode().Address()
	}
	g.addr.Store(&addr)
	return nil
}

// newNetTransport binds memberlist's UDP/TCP transport. Binding port 0 for
// TCP and then the same port for UDP can collide, so that is retried, as
// memberlist itself does.
func newNetTransport(mc *memberlist.Config) (*memberlist.NetTransport, error) {
	nc := &memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr},
		BindPort:  mc.BindPort,
		Logger:    mc.Logger,
	}
	tries := 1
	if mc.BindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			if mc.BindPort == 0 {
				mc.BindPort = nt.GetAutoBindPort()
				if mc.AdvertiseAddr == "" || mc.AdvertisePort == 0 {
					mc.AdvertisePort = mc.BindPort
				}
			}
			return nt, nil
		}
	}
	return nil, err
}

// UpdateMeta changes the Meta this node advertises and broadcasts it;
// other members (and this node's Events) see an Update. ID and
// Incarnation cannot change. Before Start it only sets the Meta to
// advertise. It waits for the broadcast to be sent until ctx's deadline,
// or BroadcastTimeout without one, but does not fail when that wait
// times out: memberlist can miss the confirmation of a broadcast sent
// quickly, and the new Meta spreads by gossip and push/pull anyway. It
// fails only for an invalid Meta (ErrInvalidMeta, ErrMetaTooLarge) or a
// Gossip that is not running (ErrNotRunning).
func (g *Gossip) UpdateMeta(ctx context.Context, m Meta) error {
	cur := g.meta.Load().meta
	if m.ID != cur.ID || m.Incarnation != cur.Incarnation {
		return fmt.Errorf("%w: ID and Incarnation cannot change (%s to %s)", ErrInvalidMeta, cur.NodeName(), m.NodeName())
	}
	enc, err := m.Encode()
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.State() {
	case StateNew:
		g.meta.Store(&localMeta{meta: m.clone(), enc: enc})
		return nil
	case StateRunning:
	default:
		return ErrNotRunning
	}
	g.meta.Store(&localMeta{meta: m.clone(), enc: enc})
	if err := g.ml.UpdateNode(g.timeout(ctx)); err != nil {
		// memberlist signals "sent" on an unbuffered channel without
		// blocking, so a broadcast sent before UpdateNode starts waiting
		// is never confirmed. The Meta is in effect and spreads by gossip
		// and push/pull either way.
		g.log.Debug("meta update not confirmed; it spreads by gossip", "err", err)
	}
	return nil
}

// Leave tells the cluster this node is leaving; the others see a Leave at
// once instead of detecting a failure. It waits for the broadcast to be
// sent until ctx's deadline, or BroadcastTimeout without one. The node
// keeps gossiping (so the leave spreads) until Shutdown. Leaving twice is
// a no-op.
func (g *Gossip) Leave(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.State() {
	case StateLeft:
		return nil
	case StateRunning:
	default:
		return ErrNotRunning
	}
	g.state.Store(int32(StateLeaving))
	err := g.ml.Leave(g.timeout(ctx))
	g.state.Store(int32(StateLeft))
	if err != nil {
		return fmt.Errorf("%w: leave: %v", ErrBroadcastTimeout, err)
	}
	g.log.Info("left the gossip cluster")
	return nil
}

// timeout is how long a broadcast may take: until ctx's deadline (at
// least a millisecond, as memberlist reads 0 as "forever"), or
// BroadcastTimeout.
func (g *Gossip) timeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return g.cfg.BroadcastTimeout
}

// Shutdown stops memberlist (without a leave unless Leave was called, so
// to the others it looks like a crash), stops the rejoin loop and the
// event forwarder and waits for them, and closes the Events channel last.
// memberlist does not wait for its own goroutines, so Shutdown also waits
// one ProbeInterval (1 s on the LAN profile), by which time a probe in
// flight has ended; a push/pull or stream in flight may take up to the
// TCP timeout (10 s LAN, 1 s local). It is idempotent; ctx bounds the
// wait, not the stopping. A Shutdown during Leave or UpdateMeta waits for
// them to finish.
func (g *Gossip) Shutdown(ctx context.Context) error {
	var err error
	first := false
	g.shutdown.Do(func() {
		first = true
		g.mu.Lock()
		defer g.mu.Unlock()
		started := g.ml != nil
		g.state.Store(int32(StateShutdown))
		g.cancel()
		if !started {
			close(g.events)
			close(g.done)
			return
		}
		if e := g.ml.Shutdown(); e != nil {
			err = fmt.Errorf("gossip: stop memberlist: %w", e)
		}
		g.metrics.members.Set(0)
		// memberlist does not wait for its own goroutines: a probe in
		// flight ends within a probe interval, when its ack timer fires.
		grace := time.NewTimer(g.cfg.profile().ProbeInterval)
		go func() {
			defer grace.Stop()
			g.loops.Wait()
			close(g.fwdStop)
			g.fwd.Wait()
			<-grace.C
			close(g.done)
		}()
	})
	select {
	case <-g.done:
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
	if first {
		g.log.Info("gossip stopped")
	}
	return err
}

// forward delivers queued events to the Events channel until Shutdown.
func (g *Gossip) forward() {
	defer g.fwd.Done()
	defer close(g.events)
	for {
		select {
		case <-g.roster.signal:
		case <-g.fwdStop:
			return
		}
		for _, ev := range g.roster.take() {
			g.logEvent(ev)
			select {
			case g.events <- ev:
			case <-g.fwdStop:
				return
			}
		}
	}
}

func (g *Gossip) logEvent(ev Event) {
	m := ev.Member
	level := slog.LevelInfo
	if ev.Type == Update {
		level = slog.LevelDebug
	}
	g.log.Log(context.Background(), level, "member "+ev.Type.String(), "member", m.ID, "incarnation", m.Incarnation,
		"addr", m.Addr, "roles", m.Roles, "state", m.State)
}

// rejoinLoop joins the seeds once, closes joined, then every
// RejoinInterval (jittered) joins the seeds that are not members.
func (g *Gossip) rejoinLoop(joined chan<- struct{}) {
	defer g.loops.Done()
	g.joinSeeds(true)
	close(joined)
	if g.cfg.RejoinInterval == 0 || len(g.cfg.Seeds) == 0 {
		return
	}
	// While this node is alone (its seeds were not up yet, as when a whole
	// cluster starts at once), retry soon, backing off to RejoinInterval;
	// once it has peers, RejoinInterval only heals partitions.
	backoff := time.Second
	next := func() time.Duration {
		if len(g.Members()) > 1 {
			backoff = time.Second
			return jitter(g.cfg.RejoinInterval)
		}
		d := min(backoff, g.cfg.RejoinInterval)
		backoff = min(2*backoff, g.cfg.RejoinInterval)
		return jitter(d)
	}
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		g.joinSeeds(false)
		t.Reset(next())
	}
}

// jitter returns d ± 20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

// joinSeeds joins the seeds that are not live members.
func (g *Gossip) joinSeeds(first bool) {
	if len(g.cfg.Seeds) == 0 || g.ctx.Err() != nil || g.State() != StateRunning {
		return // after Leave, joining again would undo it
	}
	members := g.roster.addrs()
	var todo []string
	for _, s := range g.cfg.Seeds {
		if !g.seedIsMember(s, members) {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return
	}
	n, err := g.ml.Join(todo)
	if n > 0 {
		g.metrics.joins.WithLabelValues("ok").Inc()
		msg := "joined the cluster through seeds"
		if !first {
			msg = "merged with seeds that were not members"
		}
		g.log.Info(msg, "seeds", todo, "contacted", n, "members", g.roster.count())
		return
	}
	g.metrics.joins.WithLabelValues("failed").Inc()
	if first {
		g.log.Warn("no seed reachable; running alone and retrying", "seeds", todo, "retry", g.cfg.RejoinInterval, "err", err)
	} else {
		g.log.Debug("seeds still unreachable", "seeds", todo, "err", err)
	}
}

// seedIsMember reports whether every address seed resolves to is a live
// member (which includes this node's own address). A seed that does not
// resolve is not a member: joining it lets memberlist log why.
func (g *Gossip) seedIsMember(seed string, members map[string]bool) bool {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return members[net.JoinHostPort(ip.String(), port)]
	}
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !members[net.JoinHostPort(ip, port)] {
			return false
		}
	}
	return true
}
