package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/gossip"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/ring"
	"github.com/heraldpush/herald/storage"
)

// Role is one of the parts a node can play.
type Role string

// The four roles.
const (
	RoleAuth     Role = "auth"     // verifies connection tokens
	RoleCollect  Role = "collect"  // the public HTTP API for business systems
	RoleDispatch Role = "dispatch" // routes messages to push nodes
	RolePush     Role = "push"     // holds WebSocket connections
)

// AllRoles is the default: every role in one process.
var AllRoles = []Role{RoleAuth, RoleCollect, RoleDispatch, RolePush}

// ParseRoles parses a comma-separated role list such as "push,auth".
func ParseRoles(s string) ([]Role, error) {
	var out []Role
	for _, f := range strings.Split(s, ",") {
		r := Role(strings.TrimSpace(strings.ToLower(f)))
		if r == "" {
			continue
		}
		if r == "all" {
			return slices.Clone(AllRoles), nil
		}
		if !slices.Contains(AllRoles, r) {
			return nil, fmt.Errorf("unknown role %q (want auth, collect, dispatch, push or all)", r)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no roles given")
	}
	return out, nil
}

// Authenticator turns a token into an identity (auth.JWT, or a remote auth
// service client).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Identity, error)
}

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// NodeID names the node in the cluster and in bindings. It must be
	// stable across restarts of the same machine or pod.
	NodeID string
	// Version is advertised to the cluster.
	Version string
	// Roles this node plays.
	Roles []Role
	// Addr is the public HTTP address (WebSocket, API, health, metrics).
	Addr string

	// Auth verifies connection tokens. Required with the push role.
	Auth Authenticator
	// APIKeys are the keys business systems present to POST /v1/messages.
	// Required with the collect role.
	APIKeys []string

	// MaxMessageBytes bounds a message's data in a POST and a client frame
	// on the WebSocket.
	MaxMessageBytes int
	// DefaultTTL applies when a POST names no ttl; MaxTTL caps it.
	DefaultTTL, MaxTTL time.Duration

	// Edge configures the WebSocket edge (push role). Auth, Replayer,
	// Listener, NodeID, MaxMessageBytes, Logger and Registerer are set by
	// the node.
	Edge edge.Config

	// Messages is the message store; the node closes it on Shutdown.
	// Required with the collect and push roles.
	Messages storage.Messages
	// Bindings is the user -> node binding store; the node closes it on
	// Shutdown. Required with the push and dispatch roles.
	Bindings storage.Bindings
	// LeaseTTL is how long this node's bindings survive it if it dies
	// without unbinding; the lease is renewed every LeaseCheckInterval
	// (at most LeaseTTL/3).
	LeaseTTL time.Duration
	// LeaseCheckInterval is how often the lease is renewed and checked: a
	// renewal that finds it intact lets the node's cursor move up to that
	// moment, and one that finds it gone (the binding store lost this
	// node's bindings) makes every connection resync.
	LeaseCheckInterval time.Duration
	// RebindInterval is how often every local user's binding is written
	// again, spread over the interval, so that binding stores whose keys
	// expire (Redis: KeyTTL, 24h) keep long-lived connections. It must be
	// under the store's key TTL.
	RebindInterval time.Duration
	// SweepInterval is how often expired messages are deleted.
	SweepInterval time.Duration
	// DispatchQueue bounds accepted messages waiting for dispatch; a full
	// queue makes POSTs wait (they are already durable) until there is
	// room: nothing accepted is skipped.
	DispatchQueue int
	// AppendTimeout bounds one store write for a POST; past it the POST
	// answers 503 and the write's outcome is settled in the background.
	AppendTimeout time.Duration
	// MaxUnresolved bounds the appends whose outcome was lost (the store
	// timed out) waiting to be settled with the store; past it POSTs are
	// refused with 503 before anything is written. Each holds its message
	// in memory.
	MaxUnresolved int
	// CursorInterval is how often a dispatch node sends its cursor to
	// every push node (and a collect-only node to every dispatch node),
	// besides sending it with every batch of deliveries.
	CursorInterval time.Duration
	// CursorLag keeps a push node's cursor (in a cluster) at least this
	// far behind its clock, so that a dispatch node it has not heard of
	// yet (one that just joined) cannot be passed by. It must exceed the
	// time gossip takes to announce a node plus the clock skew between
	// nodes (MaxClockSkew).
	CursorLag time.Duration
	// AppendGrace is how long after a dispatch or collect node died (gossip
	// says it is gone and its lease is dead) its abandoned store writes may
	// still land; then the nodes that held their cursor for it recover and
	// forget it. It must exceed the store's append timeout.
	AppendGrace time.Duration
	// MaxClockSkew is the most this node's clock may differ from the
	// message store's and the binding store's before /readyz answers 503:
	// beyond it a joining node's IDs could fall behind cursors already
	// given out (CursorLag).
	MaxClockSkew time.Duration

	// DrainTimeout bounds Drain: clients still connected after it are
	// dropped. DrainSpread is the window over which clients are told to
	// reconnect, so they do not all come back at once.
	DrainTimeout, DrainSpread time.Duration

	// Standalone runs without gossip and internal RPC: a single node that
	// never has peers. Otherwise the node joins a gossip cluster (of one,
	// without seeds).
	Standalone bool
	// ClusterSecret authenticates node-to-node RPC and encrypts gossip;
	// every node of a cluster has the same. Required unless Standalone.
	ClusterSecret []byte
	// Gossip configures membership. The node fills in Meta, ClusterSecret,
	// Logger and Registerer.
	Gossip gossip.Config
	// RPCAddr is the internal RPC listen address (not the public port).
	RPCAddr string
	// RPC configures the internal RPC client; the node fills in Secret,
	// Source, Cursors, Logger and Registerer.
	RPC rpc.ClientConfig
	// PublicURL is how clients reach this node, e.g. "http://10.0.0.5:8080";
	// advertised for steering (/v1/route) and drain hints. Default: built
	// from Addr, with the gossip advertise address when Addr has no host.
	PublicURL string
	// Ring configures the consistent-hash ring over the push nodes.
	Ring ring.Config
	// LookupTimeout bounds one binding lookup during dispatch; past it,
	// dispatch routes by the ring.
	LookupTimeout time.Duration
	// DeferTimeout is how long dispatch holds deliveries for a node the
	// binding store names but gossip has not announced yet (it just
	// joined); past it they are skipped and wait for replay.
	DeferTimeout time.Duration
	// DepartGrace is how long a node that left gossip, or was declared
	// dead, is given to come back before this node closes its RPC peer and
	// (if this node is the designated survivor) purges its bindings. A node
	// that only missed probes for a moment (a long GC pause, a starved
	// CPU) refutes its death within it and loses nothing. 0 retires at
	// once.
	DepartGrace time.Duration

	// Clock is the clock message IDs are made from; nil is time.Now.
	// Chaos drills skew it.
	Clock func() time.Time

	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives every metric and serves /metrics; nil makes a
	// private registry.
	Metrics *prometheus.Registry
}

// DefaultConfig returns the defaults for one node with every role.
func DefaultConfig() Config {
	return Config{
		Roles: slices.Clone(AllRoles),
		Addr:  ":8080",
		// Business payloads are notifications, not files: 64 KiB covers
		// rich ones and keeps a slow client's queue meaningful.
		MaxMessageBytes: 64 << 10,
		// A day covers a phone that was off overnight; a week is as long
		// as anything should wait in a push system.
		DefaultTTL: 24 * time.Hour,
		MaxTTL:     7 * 24 * time.Hour,
		Edge:       edge.DefaultConfig(),
		// A dead node's users are found again within 15 s even without
		// gossip.
		LeaseTTL: 15 * time.Second,
		// One command a second per node; the cursor lags about this much
		// behind the newest message.
		LeaseCheckInterval: time.Second,
		// Half the Redis binding keys' 24 h TTL.
		RebindInterval: 12 * time.Hour,
		SweepInterval:  time.Minute,
		// About a second of peak traffic for one node.
		DispatchQueue: 4096,
		// A healthy store answers in milliseconds; a caller waits no more
		// than this before it is told to retry.
		AppendTimeout: 10 * time.Second,
		// Each is a small message reference; 10,000 ride out a long store
		// outage at a busy node.
		MaxUnresolved: 1000, // at most 1000 x MaxMessageBytes (64 MiB) of data held
		// Two tiny batches a second per push node and dispatch node.
		CursorInterval: 500 * time.Millisecond,
		// Gossip announces a node within a second on a LAN; one more
		// covers MaxClockSkew.
		CursorLag: 2 * time.Second,
		// The append timeout (10 s) and the store's own maxTimeMS, plus
		// margin for a server still finishing a write.
		AppendGrace: 15 * time.Second,
		// NTP keeps clocks within milliseconds; a second means something is
		// wrong, and it is half of CursorLag.
		MaxClockSkew: time.Second,
		DrainTimeout: 30 * time.Second,
		DrainSpread:  10 * time.Second,
		Gossip:       gossip.DefaultConfig(),
		RPCAddr:      ":7947",
		RPC:          rpc.DefaultClientConfig(),
		Ring:         ring.DefaultConfig(),
		// Redis answers in well under a millisecond; a second means it is
		// not answering, and the ring is the better guess.
		LookupTimeout: time.Second,
		// Gossip spreads a join across a LAN cluster in well under a second.
		DeferTimeout: 2 * time.Second,
		// memberlist's LAN profile declares a silent node dead after about
		// 5 s; one that was only slow refutes within a gossip round or two.
		// Lease expiry (LeaseTTL) would take 15 s.
		DepartGrace: 5 * time.Second,
	}
}

// Has reports whether the node plays role r.
func (c *Config) Has(r Role) bool { return slices.Contains(c.Roles, r) }

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("node config: NodeID is required")
	}
	if len(c.Roles) == 0 {
		return errors.New("node config: at least one role is required")
	}
	for _, r := range c.Roles {
		if !slices.Contains(AllRoles, r) {
			return fmt.Errorf("node config: unknown role %q", r)
		}
	}
	if c.Addr == "" {
		return errors.New("node config: Addr is required")
	}
	if c.Has(RoleAuth) && c.Auth == nil {
		return errors.New("node config: the auth role needs Auth (a JWT verifier or a remote auth service)")
	}
	if c.Has(RolePush) && c.Auth == nil && c.Standalone {
		return errors.New("node config: a standalone push node needs Auth")
	}
	if c.Has(RoleCollect) {
		if len(c.APIKeys) == 0 {
			return errors.New("node config: the collect role needs an API key")
		}
		for _, k := range c.APIKeys {
			if len(k) < 16 {
				return errors.New("node config: API keys must be at least 16 characters")
			}
		}
	}
	if (c.Has(RoleCollect) || c.Has(RolePush)) && c.Messages == nil {
		return errors.New("node config: the collect and push roles need a message store")
	}
	if (c.Has(RolePush) || c.Has(RoleDispatch)) && c.Bindings == nil {
		return errors.New("node config: the push and dispatch roles need a binding store")
	}
	switch {
	case c.MaxMessageBytes < 1024 || c.MaxMessageBytes > storage.MaxDataLen:
		return fmt.Errorf("node config: MaxMessageBytes %d is not between 1024 and %d", c.MaxMessageBytes, storage.MaxDataLen)
	case c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL:
		return fmt.Errorf("node config: need 0 < DefaultTTL (%v) <= MaxTTL (%v)", c.DefaultTTL, c.MaxTTL)
	case c.LeaseTTL < 3*time.Millisecond:
		return fmt.Errorf("node config: LeaseTTL %v is too short", c.LeaseTTL)
	case c.RebindInterval < edge.UserShards*time.Millisecond:
		return fmt.Errorf("node config: RebindInterval %v is too short", c.RebindInterval)
	case c.SweepInterval <= 0:
		return errors.New("node config: SweepInterval must be positive")
	case c.DispatchQueue < 1:
		return errors.New("node config: DispatchQueue must be at least 1")
	case c.AppendTimeout <= 0:
		return errors.New("node config: AppendTimeout must be positive")
	case c.AppendGrace < c.AppendTimeout:
		return fmt.Errorf("node config: AppendGrace %v must be at least AppendTimeout %v", c.AppendGrace, c.AppendTimeout)
	case c.MaxUnresolved < 1:
		return errors.New("node config: MaxUnresolved must be at least 1")
	case c.LeaseCheckInterval <= 0:
		return errors.New("node config: LeaseCheckInterval must be positive")
	case c.CursorInterval <= 0:
		return errors.New("node config: CursorInterval must be positive")
	case c.CursorLag < 0 || c.AppendGrace < 0 || c.MaxClockSkew < 0:
		return errors.New("node config: CursorLag, AppendGrace and MaxClockSkew must not be negative")
	case c.DrainTimeout <= 0 || c.DrainSpread < 0:
		return errors.New("node config: DrainTimeout must be positive and DrainSpread not negative")
	case c.LookupTimeout <= 0:
		return errors.New("node config: LookupTimeout must be positive")
	case c.DeferTimeout < 0:
		return errors.New("node config: DeferTimeout must not be negative")
	case c.DepartGrace < 0:
		return errors.New("node config: DepartGrace must not be negative")
	}
	if !c.Standalone {
		if len(c.ClusterSecret) < 16 {
			return errors.New("node config: ClusterSecret of at least 16 bytes is required in a cluster")
		}
		if c.RPCAddr == "" {
			return errors.New("node config: RPCAddr is required in a cluster")
		}
		if err := c.Ring.Validate(); err != nil {
			return fmt.Errorf("node config: %w", err)
		}
	}
	return nil
}
