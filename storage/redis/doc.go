// Package redis implements [storage.Bindings] on Redis with go-redis v9's
// UniversalClient, so a single server, a Sentinel-managed master and a Redis
// Cluster all work. It uses only long-standing commands (EVAL, HSET,
// PEXPIRE, SADD, SSCAN), no Redis 7.4 hash-field TTLs; it is tested with
// Redis 7.0.
//
// # URL
//
//	redis://[user:password@]host[:port][/db][?param=value&...]
//	rediss://...   the same over TLS (1.2 or later, server name per address)
//
// A host without a port uses 6379 (26379 for Sentinel). Parameters:
//
//	addr=host:port            another address; repeat it for more. The
//	                          host after // may be left out when addr= is given.
//	cluster=true              Redis Cluster even with one seed address (a
//	                          cluster configuration endpoint). Two or more
//	                          addresses without master_name mean Cluster too.
//	master_name=NAME          Sentinel: every address (the host after // and
//	                          each addr=) is a sentinel, NAME the master set.
//	                          user, password and db are the master's.
//	sentinel_username=U       credentials for the sentinels themselves.
//	sentinel_password=P
//	client_name=NAME          CLIENT SETNAME for every connection.
//
// Examples:
//
//	redis://127.0.0.1:6379
//	rediss://:secret@redis.internal:6380/2
//	redis://10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000          (Cluster)
//	redis://:secret@sentinel-1?addr=sentinel-2&addr=sentinel-3&master_name=herald  (Sentinel)
//
// Cluster has only database 0. Unknown parameters, a bad port or database
// number, or contradicting parameters are errors wrapping
// [ErrInvalidConfig]; they never repeat the password. Timeouts, retries and
// the pool come from [Config], not from the URL.
//
// # Data model
//
// Keys start with [Config.KeyPrefix] ("herald:" by default, shown here):
//
//	herald:b:{<user>}                  hash: field <node ID> = <incarnation>; TTL KeyTTL
//	herald:lease:{<node ID>}           string: <incarnation>; TTL the lease's
//	herald:n:{<node ID>}:<incarnation> set: the users that incarnation bound; TTL KeyTTL
//
// The braces are Cluster hash tags; every command and script touches one
// key, so nothing depends on two keys sharing a slot. ('{', '}' and '%' in a
// node ID are %-escaped inside the tag.)
//
//   - Lease is one script on the lease key: read the old value, SET the
//     incarnation with PX ttl, report fresh unless the old value was this
//     incarnation. A restarted node (new incarnation), a lapse longer than
//     the TTL and a Redis that lost its data all read as fresh.
//   - Bind runs, per user, a script that sets the node's field and the
//     key's TTL together (never SET then EXPIRE as two commands), and per
//     batch a script that adds the users to the node incarnation's set and
//     sets its TTL; one pipeline (one round trip) per batch of LookupBatch
//     users. Bind overwrites a field that an older incarnation of the same
//     node ID left, so a user's hash holds at most one field per node ID.
//   - Unbind compare-and-deletes: it removes the node's field only if it
//     holds the caller's incarnation (Redis deletes the emptied hash), and
//     removes the users from the incarnation's set.
//   - Lookup pipelines one HGETALL per user, then reads the lease (GET and
//     PTTL) of each distinct node seen, in one more pipelined round trip,
//     and keeps a field only while its node's lease holds exactly the
//     field's incarnation. Lease reads are cached (see below).
//   - Purge compare-and-deletes the lease (so Lookup drops the node at
//     once), walks the incarnation's set with SSCAN, compare-and-deletes each
//     user's field, deletes the set, and compare-and-deletes the lease again
//     so that a renewal that raced with it is followed by a fresh one.
//     Bindings and the lease of another incarnation are untouched.
//
// A live binding never expires as long as its node re-binds each user at
// least every KeyTTL/2 (24h/2 by default), spreading the re-binds over that
// period; liveness comes from the lease alone. A dead node's fields stop
// counting when its lease lapses, are removed by Purge, and otherwise
// expire with the user's key (or are overwritten by the node's next
// incarnation). Lookup does not delete dead fields it meets: it cannot tell
// a dead node from one whose lease lapsed an instant ago and that is about
// to bind again with the same incarnation.
//
// # Lease cache
//
// Dispatch looks up the same few nodes' leases for every message, so Lookup
// may trust a lease it read for [Config.LeaseCacheTTL] (500ms by default),
// never beyond the lease's remaining TTL. Only "incarnation I is alive" is
// cached: a node that starts, or restarts with a new incarnation, is visible
// at once, and this client's own Lease and Purge update the cache. The cost
// is that a node purged by another process, or replaced there by a new
// incarnation, may still be returned up to LeaseCacheTTL longer; dispatch
// already copes with a stale route by re-resolving. Set it to 0 to read
// every lease every time.
//
// # Load per million connections
//
// Measured with redis-server 7.0 and 20-character node incarnations:
//
//   - Memory: about 260 bytes per bound user (190 for the user's hash
//     with its key and TTL, 70 in the node's set), so ~260 MB per million
//     users on one node each; every further node a user is bound on adds
//     ~130 bytes. Several connections of one user on one node cost nothing
//     extra.
//   - Writes: one script call per Bind or Unbind of a user, ~9µs of Redis
//     CPU each. Re-binding a million users every 12h is ~23 calls a second;
//     a churn of 1,000 connects and 1,000 disconnects a second is ~2% of one
//     Redis core. Lease renewals cost one command per node per period,
//     whatever its connection count.
//   - Reads: one HGETALL per recipient (~2.5µs of Redis CPU), in pipelines
//     of LookupBatch, plus one GET and PTTL per distinct node per
//     LeaseCacheTTL per dispatching process. Broadcasts do no lookups.
//
// # Errors
//
// Anything that is not a reply from Redis (refused or reset connections,
// timeouts, an exhausted pool, the caller's context ending) and the replies
// that mean "cannot serve now" (LOADING, READONLY, CLUSTERDOWN, TRYAGAIN,
// MASTERDOWN, BUSY, OOM, MISCONF, NOREPLICAS, NOAUTH, WRONGPASS, NOPERM, too
// many clients) wrap [storage.ErrUnavailable] together with the original
// error. Calls after Close return [storage.ErrClosed]; bad arguments
// [storage.ErrInvalid]. Every operation is idempotent, so a retry after
// ErrUnavailable is safe. With the default timeouts a call against a dead
// Redis fails within about two seconds (at once when the port refuses);
// go-redis reconnects by itself when Redis is back, and a server that
// restarted empty, lost its script cache or failed over to a replica is
// used again without a new client: a NOSCRIPT answer to a pipelined EVALSHA
// is retried with EVAL.
package redis
