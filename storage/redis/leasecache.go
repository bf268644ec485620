package redis

import (
	"sync"
	"time"
)

// leaseCache remembers, per node ID, an incarnation whose lease was seen
// alive and until when Lookup may trust that without asking Redis. It only
// ever answers "alive": a node it has no entry for, an expired entry or a
// different incarnation all send Lookup to Redis, so a lease that appears
// (a node starts, or restarts with a new incarnation) is visible at once.
// What it can hide is a lease that disappears or changes hands in another
// process, for at most the cache TTL. Safe for concurrent use.
type leaseCache struct {
	ttl time.Duration // 0: disabled

	mu    sync.RWMutex
	m     map[string]leaseEntry // node ID -> entry
	sweep int                   // size at which put drops expired entries
}

type leaseEntry struct {
	incarnation string
	until       time.Time
}

// minSweep is the map size below which expired entries are not worth
// sweeping: they are overwritten when their node is seen again.
const minSweep = 256

func newLeaseCache(ttl time.Duration) *leaseCache {
	return &leaseCache{ttl: ttl, m: make(map[string]leaseEntry), sweep: minSweep}
}

// get returns the incarnation whose lease of node id was known, at now, to
// be alive.
func (c *leaseCache) get(id string, now time.Time) (string, bool) {
	if c.ttl <= 0 {
		return "", false
	}
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return "", false
	}
	return e.incarnation, true
}

// put records that at time seen the lease of node id held incarnation with
// remaining lifetime left; the entry lasts the shorter of left and the
// cache TTL.
func (c *leaseCache) put(id, incarnation string, seen time.Time, left time.Duration) {
	if c.ttl <= 0 || left <= 0 {
		return
	}
	until := seen.Add(min(left, c.ttl))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.sweep {
		c.sweepLocked(seen)
	}
	c.m[id] = leaseEntry{incarnation: incarnation, until: until}
}

// forget drops the entry of node id if it is for incarnation.
func (c *leaseCache) forget(id, incarnation string) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	if c.m[id].incarnation == incarnation {
		delete(c.m, id)
	}
	c.mu.Unlock()
}

// sweepLocked drops expired entries and sets the next sweep size so that
// sweeping costs amortised O(1) per put.
func (c *leaseCache) sweepLocked(now time.Time) {
	for id, e := range c.m {
		if !now.Before(e.until) {
			delete(c.m, id)
		}
	}
	c.sweep = max(minSweep, 2*len(c.m))
}
