package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"
)

// The scripts. Each touches the single key it is given, so it runs on any
// topology, and does its read-check-write atomically.
var (
	// leaseScript sets the lease of a node to its incarnation for ARGV[2]
	// milliseconds and returns 1 when it did not already hold that
	// incarnation (the lease is fresh), 0 on a renewal.
	leaseScript = goredis.NewScript(`
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if old == ARGV[1] then return 0 end
return 1`)

	// releaseScript deletes a lease only if it holds incarnation ARGV[1].
	releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

	// bindScript records node ARGV[1] incarnation ARGV[2] in a user's hash
	// and (re)sets the key's TTL to ARGV[3] ms, in one step: a crash can
	// never leave a binding key without a TTL.
	bindScript = goredis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`)

	// unbindScript removes node ARGV[1]'s field from a user's hash only if
	// it holds incarnation ARGV[2] (compare-and-delete) and returns 1 when
	// it removed it. Redis deletes a hash that becomes empty by itself.
	unbindScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0`)

	// addUsersScript adds ARGV[2..] to a node incarnation's user set and
	// sets its TTL to ARGV[1] ms, in one step.
	addUsersScript = goredis.NewScript(`
local n = #ARGV
for i = 2, n, 500 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 499, n)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`)

	// removeUsersScript removes ARGV[1..] from a node incarnation's user
	// set. (A script only so that it shares evalPipelined with the rest.)
	removeUsersScript = goredis.NewScript(`
local n = #ARGV
for i = 1, n, 500 do
  redis.call('SREM', KEYS[1], unpack(ARGV, i, math.min(i + 499, n)))
end
return 1`)
)

// scriptCall is one script invocation inside a pipeline.
type scriptCall struct {
	script *goredis.Script
	key    string
	args   []any
	cmd    *goredis.Cmd
}

// evalPipelined runs calls in one pipeline with EVALSHA. A server that lost
// its script cache (a restart, a failover to a replica that never ran the
// script, SCRIPT FLUSH) answers NOSCRIPT; those calls alone are sent again
// with EVAL, in a second pipeline, which also caches the scripts again.
// Afterwards every call's cmd holds its reply; the error is the first
// remaining failure, unmapped.
func (b *Bindings) evalPipelined(ctx context.Context, calls []scriptCall) error {
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := range calls {
			c := &calls[i]
			c.cmd = c.script.EvalSha(ctx, p, []string{c.key}, c.args...)
		}
		return nil
	})
	if err == nil {
		return nil
	}
	var retry []int
	for i := range calls {
		switch err := calls[i].cmd.Err(); {
		case err == nil:
		case goredis.HasErrorPrefix(err, "NOSCRIPT"):
			retry = append(retry, i)
		default:
			return err
		}
	}
	if len(retry) == 0 {
		return err
	}
	b.log.Info("redis lost its script cache (restart, failover or SCRIPT FLUSH); sending scripts again",
		"calls", len(retry))
	_, err = b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, i := range retry {
			c := &calls[i]
			c.cmd = c.script.Eval(ctx, p, []string{c.key}, c.args...)
		}
		return nil
	})
	return err
}
