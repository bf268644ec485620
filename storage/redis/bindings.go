package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/storage"
)

// go-redis dials up to 5 times, 100ms apart, before a connection attempt
// counts as failed, and waits those 100ms even after the last attempt.
// MaxRetries already retries whole commands, with backoff; one attempt per
// dial and next to no wait keep a call against a dead server within its
// timeouts (a refused port fails in milliseconds, not 300).
const (
	dialAttempts = 1
	dialWait     = time.Millisecond
)

// Bindings is a [storage.Bindings] on Redis: a single server, a Sentinel
// master or a Redis Cluster. It is safe for concurrent use.
type Bindings struct {
	client goredis.UniversalClient
	owned  bool // Close closes client
	keys   keys
	keyTTL int64 // KeyTTL in milliseconds
	batch  int
	cache  *leaseCache
	log    *slog.Logger
	closed atomic.Bool
}

var _ storage.Bindings = (*Bindings)(nil)

// New connects to the Redis that cfg.URL names. It starts nothing but the
// go-redis client, which dials lazily: New succeeds while Redis is down, and
// calls fail with [storage.ErrUnavailable] until it is back. Close releases
// the client.
func New(cfg Config) (*Bindings, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("%w: url is required", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	opts.DialTimeout = cfg.DialTimeout
	opts.ReadTimeout = cfg.ReadTimeout
	opts.WriteTimeout = cfg.WriteTimeout
	opts.PoolTimeout = cfg.PoolTimeout
	opts.PoolSize = cfg.PoolSize
	opts.MaxRetries = cfg.MaxRetries
	if cfg.MaxRetries == 0 {
		opts.MaxRetries = -1 // go-redis: 0 means its default of 3
	}
	// A caller's deadline shorter than the timeouts above wins.
	opts.ContextTimeoutEnabled = true

	client, mode := newClient(opts)
	b := newBindings(client, cfg)
	b.owned = true
	b.log.Debug("redis bindings configured", "mode", mode, "addrs", opts.Addrs, "prefix", cfg.KeyPrefix)
	return b, nil
}

// NewFromClient uses an existing go-redis client; cfg.URL and the
// connection settings are ignored. The caller keeps ownership of c: Close
// does not close it.
func NewFromClient(c goredis.UniversalClient, cfg Config) (*Bindings, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidConfig)
	}
	cfg.URL = ""
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBindings(c, cfg), nil
}

func newBindings(c goredis.UniversalClient, cfg Config) *Bindings {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bindings{
		client: c,
		keys:   keys{prefix: cfg.KeyPrefix},
		keyTTL: max(cfg.KeyTTL.Milliseconds(), 1),
		batch:  cfg.LookupBatch,
		cache:  newLeaseCache(cfg.LeaseCacheTTL),
		log:    log,
	}
}

// newClient builds the client that go-redis's NewUniversalClient would,
// with dialAttempts set, and names the topology for logs.
func newClient(o *goredis.UniversalOptions) (goredis.UniversalClient, string) {
	switch {
	case o.MasterName != "":
		fo := o.Failover()
		fo.DialerRetries, fo.DialerRetryTimeout = dialAttempts, dialWait
		return goredis.NewFailoverClient(fo), "sentinel"
	case len(o.Addrs) > 1 || o.IsClusterMode:
		co := o.Cluster()
		co.DialerRetries, co.DialerRetryTimeout = dialAttempts, dialWait
		return goredis.NewClusterClient(co), "cluster"
	default:
		so := o.Simple()
		so.DialerRetries, so.DialerRetryTimeout = dialAttempts, dialWait
		return goredis.NewClient(so), "single"
	}
}

// Close releases the client (if New created it). It is idempotent; calls
// after Close return [storage.ErrClosed].
func (b *Bindings) Close() error {
	if !b.closed.CompareAndSwap(false, true) || !b.owned {
		return nil
	}
	if err := b.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: close: %w", err)
	}
	return nil
}

// Ping checks that Redis answers, for readiness probes.
func (b *Bindings) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return fmt.Errorf("redis: ping: %w", storage.ErrClosed)
	}
	return b.wrapErr(b.client.Ping(ctx).Err(), "ping")
}

// Lease implements [storage.Bindings.Lease] with one script on the node's
// lease key: it sets the lease to n.Incarnation for ttl (rounded up to a
// millisecond) and reports fresh unless it held n.Incarnation already.
func (b *Bindings) Lease(ctx context.Context, n storage.Node, ttl time.Duration) (bool, error) {
	if err := b.checkNode(n); err != nil {
		return false, b.wrapErr(err, "lease %s", n)
	}
	if ttl <= 0 {
		return false, fmt.Errorf("redis: lease %s: %w: ttl %v is not positive", n, storage.ErrInvalid, ttl)
	}
	ms := (ttl + time.Millisecond - 1).Milliseconds()
	start := time.Now()
	fresh, err := leaseScript.Run(ctx, b.client, []string{b.keys.lease(n.ID)}, n.Incarnation, ms).Int64()
	if err != nil {
		return false, b.wrapErr(err, "lease %s", n)
	}
	b.cache.put(n.ID, n.Incarnation, start, ttl)
	return fresh == 1, nil
}

// LeaseHolder implements [storage.Bindings.LeaseHolder] with one GET of
// the node's lease key, bypassing the lease cache.
func (b *Bindings) LeaseHolder(ctx context.Context, id string) (string, error) {
	if b.closed.Load() {
		return "", fmt.Errorf("redis: lease holder %s: %w", id, storage.ErrClosed)
	}
	if id == "" {
		return "", fmt.Errorf("redis: lease holder: %w: empty node ID", storage.ErrInvalid)
	}
	inc, err := b.client.Get(ctx, b.keys.lease(id)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", b.wrapErr(err, "lease holder %s", id)
	}
	return inc, nil
}

// Bind implements [storage.Bindings.Bind]. Per batch of users it sends one
// pipeline: a script per user that sets the node's field in the user's hash
// and the hash's TTL together, and one that adds the batch to the node
// incarnation's user set (with the same TTL).
func (b *Bindings) Bind(ctx context.Context, n storage.Node, users []string) error {
	if err := b.checkUsers(n, users); err != nil {
		return b.wrapErr(err, "bind %d users to %s", len(users), n)
	}
	args := []any{n.ID, n.Incarnation, b.keyTTL}
	set := b.keys.nodeSet(n)
	calls := make([]scriptCall, 0, min(len(users), b.batch)+1)
	for start := 0; start < len(users); start += b.batch {
		batch := users[start:min(start+b.batch, len(users))]
		members := make([]any, 0, len(batch)+1)
		members = append(members, b.keyTTL)
		for _, u := range batch {
			members = append(members, u)
		}
		// The set first: whatever a failure leaves behind, Purge can find
		// every binding that was written.
		calls = append(calls[:0], scriptCall{script: addUsersScript, key: set, args: members})
		for _, u := range batch {
			calls = append(calls, scriptCall{script: bindScript, key: b.keys.binding(u), args: args})
		}
		if err := b.evalPipelined(ctx, calls); err != nil {
			return b.wrapErr(err, "bind %d users to %s", len(users), n)
		}
	}
	return nil
}

// Unbind implements [storage.Bindings.Unbind] with a compare-and-delete
// script per user and one removal from the node's user set per batch, one
// pipeline per batch.
func (b *Bindings) Unbind(ctx context.Context, n storage.Node, users []string) error {
	if err := b.checkUsers(n, users); err != nil {
		return b.wrapErr(err, "unbind %d users from %s", len(users), n)
	}
	args := []any{n.ID, n.Incarnation}
	set := b.keys.nodeSet(n)
	calls := make([]scriptCall, 0, min(len(users), b.batch)+1)
	for start := 0; start < len(users); start += b.batch {
		batch := users[start:min(start+b.batch, len(users))]
		calls = calls[:0]
		members := make([]any, 0, len(batch))
		for _, u := range batch {
			calls = append(calls, scriptCall{script: unbindScript, key: b.keys.binding(u), args: args})
			members = append(members, u)
		}
		calls = append(calls, scriptCall{script: removeUsersScript, key: set, args: members})
		if err := b.evalPipelined(ctx, calls); err != nil {
			return b.wrapErr(err, "unbind %d users from %s", len(users), n)
		}
	}
	return nil
}

// Lookup implements [storage.Bindings.Lookup]: one pipeline of HGETALLs
// per batch of users, then one pipeline that reads the leases of the
// distinct nodes seen, unless the lease cache vouches for them. A field
// counts only while its node's lease holds exactly its incarnation.
func (b *Bindings) Lookup(ctx context.Context, users []string) (map[string][]string, error) {
	if b.closed.Load() {
		return nil, fmt.Errorf("redis: lookup %d users: %w", len(users), storage.ErrClosed)
	}
	for _, u := range users {
		if err := storage.ValidateUser(u); err != nil {
			return nil, fmt.Errorf("redis: lookup %d users: %w", len(users), err)
		}
	}
	out := make(map[string][]string)
	if len(users) == 0 {
		return out, nil
	}
	cmds := make([]*goredis.MapStringStringCmd, len(users))
	for start := 0; start < len(users); start += b.batch {
		end := min(start+b.batch, len(users))
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := start; i < end; i++ {
				cmds[i] = p.HGetAll(ctx, b.keys.binding(users[i]))
			}
			return nil
		})
		if err != nil {
			return nil, b.wrapErr(err, "lookup %d users", len(users))
		}
	}

	live, err := b.liveIncarnations(ctx, cmds)
	if err != nil {
		return nil, b.wrapErr(err, "lookup %d users: read leases", len(users))
	}

	// Most users are on one node: their one-element lists share a backing
	// array, capped so that an append by the caller copies.
	one := make([]string, 0, len(users))
	for i, c := range cmds {
		var nodes []string
		for id, inc := range c.Val() {
			if inc == "" || live[id] != inc {
				continue
			}
			if nodes == nil {
				one = append(one, id)
				nodes = one[len(one)-1 : len(one) : len(one)]
			} else {
				nodes = append(nodes, id)
			}
		}
		if nodes != nil {
			slices.Sort(nodes)
			out[users[i]] = nodes
		}
	}
	return out, nil
}

// liveIncarnations returns, for every node ID in the replies, the
// incarnation its lease holds ("" if none): from the lease cache when it
// vouches for the incarnation the replies name, from Redis otherwise.
func (b *Bindings) liveIncarnations(ctx context.Context, cmds []*goredis.MapStringStringCmd) (map[string]string, error) {
	type verdict struct {
		inc       string
		fromRedis bool
	}
	now := time.Now()
	known := make(map[string]verdict)
	var need []string
	for _, c := range cmds {
		for id, inc := range c.Val() {
			v, seen := known[id]
			if seen && (v.fromRedis || v.inc == inc) {
				continue
			}
			if !seen {
				if cached, ok := b.cache.get(id, now); ok {
					known[id] = verdict{inc: cached}
					if cached == inc {
						continue
					}
				}
			}
			// Unknown, or the cache names another incarnation (which may
			// be stale): ask Redis, whose answer then decides for all.
			known[id] = verdict{inc: v.inc, fromRedis: true}
			need = append(need, id)
		}
	}

	for start := 0; start < len(need); start += b.batch {
		ids := need[start:min(start+b.batch, len(need))]
		gets := make([]*goredis.StringCmd, len(ids))
		ttls := make([]*goredis.DurationCmd, len(ids))
		sent := time.Now()
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, id := range ids {
				key := b.keys.lease(id)
				gets[i] = p.Get(ctx, key)
				ttls[i] = p.PTTL(ctx, key)
			}
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, err
		}
		for i, id := range ids {
			inc, err := gets[i].Result()
			switch {
			case errors.Is(err, goredis.Nil):
				inc = ""
			case err != nil:
				return nil, err
			}
			known[id] = verdict{inc: inc, fromRedis: true}
			if inc != "" && ttls[i].Err() == nil {
				b.cache.put(id, inc, sent, ttls[i].Val())
			}
		}
	}

	live := make(map[string]string, len(known))
	for id, v := range known {
		live[id] = v.inc
	}
	return live, nil
}

// Purge implements [storage.Bindings.Purge]. It releases n's lease (if
// it holds n.Incarnation) first, so Lookup stops returning n at once;
// walks n's user set with SSCAN, compare-and-deleting each user's field in
// one pipeline per batch; deletes the set; and releases the lease again, so
// that a renewal that raced with the purge is followed by a fresh one,
// which makes the node bind its users again.
func (b *Bindings) Purge(ctx context.Context, n storage.Node) (int, error) {
	if err := b.checkNode(n); err != nil {
		return 0, b.wrapErr(err, "purge %s", n)
	}
	lease := []string{b.keys.lease(n.ID)}
	if err := releaseScript.Run(ctx, b.client, lease, n.Incarnation).Err(); err != nil {
		return 0, b.wrapErr(err, "purge %s: release lease", n)
	}
	b.cache.forget(n.ID, n.Incarnation)

	set := b.keys.nodeSet(n)
	args := []any{n.ID, n.Incarnation}
	removed := 0
	var calls []scriptCall
	for cursor := uint64(0); ; {
		users, next, err := b.client.SScan(ctx, set, cursor, "", int64(b.batch)).Result()
		if err != nil {
			return removed, b.wrapErr(err, "purge %s: scan users", n)
		}
		calls = calls[:0]
		for _, u := range users {
			calls = append(calls, scriptCall{script: unbindScript, key: b.keys.binding(u), args: args})
		}
		if len(calls) > 0 {
			if err := b.evalPipelined(ctx, calls); err != nil {
				return removed, b.wrapErr(err, "purge %s: unbind", n)
			}
			for _, c := range calls {
				if c.cmd.Val() == int64(1) {
					removed++
				}
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if err := b.client.Del(ctx, set).Err(); err != nil {
		return removed, b.wrapErr(err, "purge %s: delete user set", n)
	}
	if err := releaseScript.Run(ctx, b.client, lease, n.Incarnation).Err(); err != nil {
		return removed, b.wrapErr(err, "purge %s: release lease", n)
	}
	b.cache.forget(n.ID, n.Incarnation)
	return removed, nil
}

// checkNode returns ErrClosed after Close and ErrInvalid for an
// incomplete node.
func (b *Bindings) checkNode(n storage.Node) error {
	if b.closed.Load() {
		return storage.ErrClosed
	}
	if n.ID == "" || n.Incarnation == "" {
		return fmt.Errorf("%w: node needs an ID and an incarnation", storage.ErrInvalid)
	}
	return nil
}

// checkUsers is checkNode plus [storage.ValidateUser] for every user, so
// that a bad ID fails the call before anything is written.
func (b *Bindings) checkUsers(n storage.Node, users []string) error {
	if err := b.checkNode(n); err != nil {
		return err
	}
	for _, u := range users {
		if err := storage.ValidateUser(u); err != nil {
			return err
		}
	}
	return nil
}

// ServerTime returns the server's clock (TIME), so a node can measure its
// own clock against it.
func (b *Bindings) ServerTime(ctx context.Context) (time.Time, error) {
	if b.closed.Load() {
		return time.Time{}, fmt.Errorf("redis: server time: %w", storage.ErrClosed)
	}
	t, err := b.client.Time(ctx).Result()
	if err != nil {
		return time.Time{}, b.wrapErr(err, "server time")
	}
	return t, nil
}
