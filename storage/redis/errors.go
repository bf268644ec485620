package redis

import (
	"errors"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/storage"
)

// unavailableReplies are the prefixes of server replies that mean "this
// server cannot serve you now" rather than "this request is wrong": the
// caller should retry later or fall back, as with a network failure.
var unavailableReplies = []string{
	"LOADING",     // restarting, loading the dataset
	"BUSY",        // a script runs too long
	"TRYAGAIN",    // cluster resharding
	"CLUSTERDOWN", // cluster lost slots
	"MASTERDOWN",  // replica lost its master
	"READONLY",    // talking to a replica after a failover
	"NOREPLICAS",  // min-replicas-to-write not met
	"MISCONF",     // cannot persist, refuses writes
	"OOM",         // maxmemory reached, refuses writes
	"NOAUTH",      // credentials missing or rotated: the backend is
	"WRONGPASS",   // unreachable for this node until fixed, and
	"NOPERM",      // callers should degrade as if it were down
	"ERR max number of clients reached",
}

// unavailable reports whether err means Redis could not be reached or could
// not serve the request now. Everything that is not a reply from the server
// is: refused or reset connections, timeouts, an exhausted or closed pool,
// the caller's context ending. A reply is only for the prefixes above;
// others (WRONGTYPE, script errors) say the request or the data is wrong.
func unavailable(err error) bool {
	var reply goredis.Error
	if !errors.As(err, &reply) {
		return true
	}
	msg := reply.Error()
	for _, p := range unavailableReplies {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// wrapErr gives err the context of op and the storage sentinel callers
// test for: [storage.ErrClosed] after Close, [storage.ErrUnavailable]
// (joined with the original error, so errors.Is still finds, say,
// context.DeadlineExceeded) when Redis is unreachable.
func (b *Bindings) wrapErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	op := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, storage.ErrInvalid), errors.Is(err, storage.ErrClosed):
		return fmt.Errorf("redis: %s: %w", op, err)
	case b.closed.Load():
		return fmt.Errorf("redis: %s: %w", op, storage.ErrClosed)
	case unavailable(err):
		return fmt.Errorf("redis: %s: %w: %w", op, storage.ErrUnavailable, err)
	default:
		return fmt.Errorf("redis: %s: %w", op, err)
	}
}
