package redis

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// ErrInvalidConfig is wrapped by every error of [Config.Validate] and
// [ParseURL].
var ErrInvalidConfig = errors.New("redis: invalid config")

// MaxLookupBatch is the largest [Config.LookupBatch] accepted: a pipeline
// of more commands holds the server (and the client's buffers) for too long.
const MaxLookupBatch = 100000

// Config configures [New]. Start from [DefaultConfig]; the zero value is not
// valid.
type Config struct {
	// URL says where Redis is: a single server, a Redis Cluster or a
	// Sentinel-managed master. See the package documentation for the format.
	// Required by New; ignored by NewFromClient.
	URL string

	// KeyPrefix starts every key this package writes, so that several
	// Herald clusters (or tests) can share one Redis. It must not contain
	// '{' or '}': the keys carry their own Cluster hash tags.
	KeyPrefix string

	// KeyTTL is how long a user's binding key, and a node incarnation's user
	// set, live without a new Bind. Push nodes must re-bind each of their
	// users at least every KeyTTL/2, spread over that period, so a live
	// binding never expires; a dead node's leftovers are gone after KeyTTL
	// even if nobody purges them. Liveness itself comes from the node lease,
	// not from this TTL.
	KeyTTL time.Duration

	// DialTimeout bounds opening one connection.
	DialTimeout time.Duration
	// ReadTimeout bounds waiting for one reply (or a whole pipeline).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one command (or a whole pipeline).
	WriteTimeout time.Duration
	// PoolTimeout bounds waiting for a free connection when all PoolSize
	// connections are busy.
	PoolTimeout time.Duration
	// PoolSize is the number of connections per Redis server; 0 means
	// go-redis's default of 10 per GOMAXPROCS.
	PoolSize int
	// MaxRetries is how many times a command (or pipeline) that failed on
	// the network, or on a failover reply such as LOADING or READONLY, is
	// retried. 0 means never. Every operation is idempotent, so retrying is
	// safe.
	MaxRetries int

	// LookupBatch is the number of users per pipeline, that is per round
	// trip: Lookup sends one HGETALL per user, Bind, Unbind and Purge one
	// script call per user, LookupBatch of them at a time.
	LookupBatch int

	// LeaseCacheTTL is how long Lookup may reuse a node's lease it read
	// from Redis, instead of reading it again. Only a lease seen alive is
	// cached, never longer than its remaining TTL, and this client's own
	// Lease and Purge update the cache, so a new lease is visible at once;
	// but a node that another process purged, or that restarted with a new
	// incarnation elsewhere, may be returned up to LeaseCacheTTL longer.
	// 0 disables the cache.
	LeaseCacheTTL time.Duration

	// Logger receives the few events worth an operator's attention (the
	// server lost its script cache). Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration for a local Redis.
func DefaultConfig() Config {
	return Config{
		// The port every Redis listens on out of the box.
		URL: "redis://127.0.0.1:6379",
		// Short and recognisable in a shared Redis ("herald:b:{alice}").
		KeyPrefix: "herald:",
		// Long enough that re-binding a million users every 12h costs ~23
		// scripts a second per million; short enough that garbage a dead
		// node left behind (and nobody purged) does not pile up for days.
		KeyTTL: 24 * time.Hour,
		// Redis answers in well under a millisecond on a LAN; waiting
		// longer than this only delays the fallback (dispatch routes by
		// ring, push keeps its connections) when Redis is down.
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond,
		// A pool that stays exhausted this long means Redis is too slow
		// for the load: fail the call rather than queue behind it.
		PoolTimeout: time.Second,
		// go-redis's default (10 per CPU) fits both roles.
		PoolSize: 0,
		// Two retries ride out a failover reply or a stale pooled
		// connection after a server restart, and still fail within about
		// two seconds when Redis is really gone.
		MaxRetries: 2,
		// 1,000 small commands are ~50 KB on the wire and well under a
		// millisecond of server time: large enough to amortise the round
		// trip, small enough not to stall other clients.
		LookupBatch: 1000,
		// Dispatch looks up the same few dozen nodes' leases for every
		// message; half a second saves that round trip under load while
		// keeping the window in which a purged node is still returned
		// short next to the lease TTL (seconds).
		LeaseCacheTTL: 500 * time.Millisecond,
	}
}

// Validate reports the first problem with c, wrapping [ErrInvalidConfig].
// URL is checked only when set (NewFromClient does not need it).
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if c.URL != "" {
		if _, err := ParseURL(c.URL); err != nil {
			return err
		}
	}
	switch {
	case strings.ContainsAny(c.KeyPrefix, "{}"):
		return bad("key prefix %q contains '{' or '}', which would put every key in one Cluster slot", c.KeyPrefix)
	case c.KeyTTL < time.Second:
		return bad("key TTL %v is shorter than 1s", c.KeyTTL)
	case c.DialTimeout <= 0, c.ReadTimeout <= 0, c.WriteTimeout <= 0, c.PoolTimeout <= 0:
		return bad("timeouts must be positive (dial %v, read %v, write %v, pool %v)",
			c.DialTimeout, c.ReadTimeout, c.WriteTimeout, c.PoolTimeout)
	case c.PoolSize < 0:
		return bad("pool size %d is negative", c.PoolSize)
	case c.MaxRetries < 0:
		return bad("max retries %d is negative", c.MaxRetries)
	case c.LookupBatch < 1 || c.LookupBatch > MaxLookupBatch:
		return bad("lookup batch %d is not within 1..%d", c.LookupBatch, MaxLookupBatch)
	case c.LeaseCacheTTL < 0:
		return bad("lease cache TTL %v is negative", c.LeaseCacheTTL)
	}
	return nil
}
