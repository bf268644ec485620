package ring

import (
	"slices"
	"sync/atomic"
)

// Ring is the current snapshot of the consistent-hash ring over the live
// push nodes. One goroutine, the one that consumes gossip events, calls
// Set; any number of goroutines call Snapshot concurrently with it. Make
// one with New; the zero Ring is not usable.
type Ring struct {
	cfg  Config
	snap atomic.Pointer[Snapshot]
}

// New returns an empty ring, or an error if cfg is invalid.
func New(cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Ring{cfg: cfg}
	r.snap.Store(&Snapshot{cfg: cfg})
	return r, nil
}

// Set replaces the member set with members (node IDs, in any order,
// duplicates ignored). It builds a new snapshot and publishes it; readers
// holding the previous snapshot keep an unchanged view. Setting the
// current member set again does nothing.
//
// If the new member set cannot be placed, Set returns the error (wrapping
// ErrEmptyMemberID or ErrTooManyMembers) and keeps the previous snapshot:
// no member count a valid Config cannot hold is silently truncated or
// given a different load bound, because every node must compute the same
// ring. A later Set with a member set that fits publishes normally.
//
// Set must be called from one goroutine at a time. Concurrent calls do not
// corrupt the ring, but whichever finishes last wins.
func (r *Ring) Set(members []string) error {
	ids, err := normalize(members)
	if err != nil {
		return err
	}
	if slices.Equal(ids, r.snap.Load().members) {
		return nil
	}
	s, err := build(r.cfg, ids)
	if err != nil {
		return err
	}
	r.snap.Store(s)
	return nil
}

// Snapshot returns the current snapshot; never nil. It does not lock.
func (r *Ring) Snapshot() *Snapshot { return r.snap.Load() }

// Config returns the ring's configuration.
func (r *Ring) Config() Config { return r.cfg }
