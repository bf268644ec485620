package baselines

import (
	"context"
	"sync"
)

// Registry is the set of open connections of one hub, and of the goroutines
// serving them. Once closed it refuses new connections, so a handler that
// upgrades during shutdown cannot leak one. Safe for concurrent use.
type Registry[T comparable] struct {
	mu     sync.RWMutex
	m      map[T]struct{}
	closed bool
	wg     sync.WaitGroup // goroutines started by Add
}

// NewRegistry returns an empty, open registry.
func NewRegistry[T comparable]() *Registry[T] {
	return &Registry[T]{m: make(map[T]struct{})}
}

// Add registers v and starts each of serve in its own goroutine, which Wait
// waits for. It returns false, and does neither, once the registry is
// closed: the caller must then close the connection itself.
func (r *Registry[T]) Add(v T, serve ...func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.m[v] = struct{}{}
	// Under the lock, so no Add can follow Close's and race with Wait.
	r.wg.Add(len(serve))
	for _, f := range serve {
		go func() {
			defer r.wg.Done()
			f()
		}()
	}
	return true
}

// Remove unregisters v. Removing an absent value does nothing.
func (r *Registry[T]) Remove(v T) {
	r.mu.Lock()
	delete(r.m, v)
	r.mu.Unlock()
}

// Len is the number of registered values.
func (r *Registry[T]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

// Range calls f for every registered value under the read lock and returns
// how many it visited. f must not block and must not call Add or Remove.
func (r *Registry[T]) Range(f func(T)) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for v := range r.m {
		f(v)
	}
	return len(r.m)
}

// Snapshot appends every registered value to dst and returns it, for callers
// whose per-value work may block or remove values.
func (r *Registry[T]) Snapshot(dst []T) []T {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for v := range r.m {
		dst = append(dst, v)
	}
	return dst
}

// Close refuses further Adds and returns the values that were registered,
// leaving the registry empty. Later calls return nothing.
func (r *Registry[T]) Close() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	out := make([]T, 0, len(r.m))
	for v := range r.m {
		out = append(out, v)
	}
	clear(r.m)
	return out
}

// Wait waits, after Close, for every goroutine Add started, or for ctx.
func (r *Registry[T]) Wait(ctx context.Context) error {
	return Wait(ctx, &r.wg)
}

// Wait waits for wg, or returns ctx.Err() when ctx ends first.
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
