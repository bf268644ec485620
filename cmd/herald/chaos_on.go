//go:build chaos

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/storage/mongo"
)

// A chaos build (go build -tags chaos ./cmd/herald) is for fault drills
// (benchmarks/chaos): it can drop the node's internal traffic to chosen
// hosts, as a network partition would, and skew the clock its message IDs
// are made from, both at run time through a control endpoint; and it can
// run with short timings so that drills take minutes, not hours.

// chaosSettings are the chaos build's flags.
type chaosSettings struct {
	control string
	fast    bool
}

func (s *serveSettings) chaosFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.chaos.control, "chaos-control", "", "chaos build: serve the fault control API (POST /chaos) on this `address`")
	fs.BoolVar(&s.chaos.fast, "chaos-fast", false, "chaos build: short timings (gossip, leases, grace periods, pings), for drills")
}

// chaosMongo shortens the MongoDB store's timeouts under --chaos-fast.
func (s *serveSettings) chaosMongo(mc *mongo.Config) {
	if !s.chaos.fast {
		return
	}
	// FerretDB (the drills' MongoDB-wire server) scans a collection for
	// every replay: under a reconnect storm a query takes seconds, and
	// giving up on it early only makes the clients ask again.
	mc.ConnectTimeout = 3 * time.Second
	mc.ServerSelectionTimeout = 2 * time.Second
	mc.OperationTimeout = 8 * time.Second
}

// chaosNode installs the fault injectors (and the fast timings) into cfg
// and returns the function that starts the control server.
func (s *serveSettings) chaosNode(cfg *node.Config, log *slog.Logger) (func() func(), error) {
	f := &faults{blocked: make(map[string]chan struct{})}
	cfg.RPC.Dialer = f.dial
	cfg.Gossip.WrapTransport = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		return &faultTransport{NodeAwareTransport: t, f: f}
	}
	cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(f.offset.Load())) }
	if s.chaos.fast {
		fastTimings(cfg)
	}
	if s.chaos.control == "" {
		return func() func() { return func() {} }, nil
	}
	ln, err := net.Listen("tcp", s.chaos.control)
	if err != nil {
		return nil, fmt.Errorf("chaos control on %s: %w", s.chaos.control, err)
	}
	return func() func() {
		srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		log.Warn("chaos build: fault control API open", "addr", ln.Addr().String())
		return func() { _ = srv.Close() }
	}, nil
}

// fastTimings are the drills' timings: every failure is noticed, and
// every grace period ends, within seconds.
func fastTimings(cfg *node.Config) {
	cfg.Gossip.Profile = "local"
	cfg.Gossip.ProbeInterval = 200 * time.Millisecond
	cfg.Gossip.ProbeTimeout = 150 * time.Millisecond
	cfg.Gossip.GossipInterval = 50 * time.Millisecond
	cfg.Gossip.SuspicionMult = 4
	cfg.Gossip.PushPullInterval = 2 * time.Second
	cfg.Gossip.RejoinInterval = time.Second
	// The lease (LeaseTTL), the departure grace (DepartGrace) and the
	// append grace (AppendGrace) keep their production values: together
	// they decide when a silent node counts as dead (about 21 s after it
	// stops), and shorter ones would make the drill's 15 s freeze a death,
	// measuring a cluster-wide recovery instead of what a freeze costs.
	cfg.LeaseCheckInterval = 300 * time.Millisecond
	cfg.AppendTimeout = 3 * time.Second
	cfg.CursorLag = 500 * time.Millisecond
	cfg.SweepInterval = 10 * time.Second // the drill's messages live 2 minutes
	cfg.CursorInterval = 100 * time.Millisecond
	cfg.DeferTimeout = time.Second
	cfg.Edge.Tick = 50 * time.Millisecond
	cfg.Edge.PingInterval = 2 * time.Second
	cfg.Edge.IdleTimeout = 10 * time.Second
	cfg.Edge.CloseTimeout = time.Second
	cfg.Edge.ResyncTimeout = 5 * time.Second
	cfg.RPC.AckTimeout = time.Second
	cfg.RPC.DialTimeout = time.Second
	cfg.RPC.MaxBackoff = 300 * time.Millisecond
}

// faults drops this node's internal traffic to blocked hosts and skews its
// ID clock. Every node of a drill runs on its own loopback IP, so a host
// is an IP: blocking a node's IP on every other node, and every other IP
// on it, partitions it (traffic is dropped where it is sent).
type faults struct {
	mu      sync.Mutex
	blocked map[string]chan struct{} // IP -> closed when unblocked
	offset  atomic.Int64             // ns added to the ID clock
}

// gate returns a channel closed once host is not blocked, or nil.
func (f *faults) gate(addr string) <-chan struct{} {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[host]
}

// setBlocked makes hosts the blocked set.
func (f *faults) setBlocked(hosts []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		want[h] = true
		if _, ok := f.blocked[h]; !ok {
			f.blocked[h] = make(chan struct{})
		}
	}
	for h, ch := range f.blocked {
		if !want[h] {
			close(ch)
			delete(f.blocked, h)
		}
	}
}

var errBlocked = errors.New("chaos: host blocked")

// dial is the RPC dialer: a blocked host cannot be reached, and the
// connections open to it stall until it is unblocked.
func (f *faults) dial(ctx context.Context, addr string) (net.Conn, error) {
	if f.gate(addr) != nil {
		return nil, errBlocked
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, f: f, addr: addr, closed: make(chan struct{})}, nil
}

type stallConn struct {
	net.Conn
	f      *faults
	addr   string
	once   sync.Once
	closed chan struct{}
}

func (c *stallConn) wait() error {
	for {
		g := c.f.gate(c.addr)
		if g == nil {
			return nil
		}
		select {
		case <-g:
		case <-c.closed:
			return net.ErrClosed
		}
	}
}

func (c *stallConn) Read(p []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if werr := c.wait(); werr != nil {
		return 0, werr
	}
	return n, err
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// faultTransport is memberlist's transport, dropping what this node sends
// to blocked hosts.
type faultTransport struct {
	memberlist.NodeAwareTransport
	f *faults
}

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.gate(addr) != nil {
		return time.Now(), nil // lost on the way
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.f.gate(a.Addr) != nil {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.gate(addr) != nil {
		return nil, errBlocked
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.f.gate(a.Addr) != nil {
		return nil, errBlocked
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// chaosState is the control API's body: POST /chaos sets it, GET reads it.
type chaosState struct {
	Block       []string `json:"block"`
	ClockOffset string   `json:"clock_offset"`
}

func (f *faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/chaos" {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodPost {
		var st chaosState
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&st); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		off := time.Duration(0)
		if st.ClockOffset != "" {
			var err error
			if off, err = time.ParseDuration(st.ClockOffset); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		f.setBlocked(st.Block)
		f.offset.Store(int64(off))
	}
	f.mu.Lock()
	st := chaosState{ClockOffset: time.Duration(f.offset.Load()).String()}
	for h := range f.blocked {
		st.Block = append(st.Block, h)
	}
	f.mu.Unlock()
	sort.Strings(st.Block)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}
