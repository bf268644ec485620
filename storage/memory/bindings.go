package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/heraldpush/herald/storage"
)

// Bindings is an in-memory storage.Bindings. The zero value is not usable;
// call NewBindings.
type Bindings struct {
	now func() time.Time

	mu     sync.RWMutex
	closed bool
	users  map[string]bindingSet // user -> its bindings
	leases map[string]lease      // node ID -> lease
}

type binding struct {
	node, incarnation string
}

// bindingSet is a user's bindings: one inline (a user on one node costs
// no allocation beyond the map entry), more in a slice.
type bindingSet struct {
	first binding
	more  []binding
}

func (s bindingSet) all() []binding {
	if s.first.node == "" {
		return nil
	}
	return append([]binding{s.first}, s.more...)
}

func setOf(bs []binding) bindingSet {
	if len(bs) == 0 {
		return bindingSet{}
	}
	out := bindingSet{first: bs[0]}
	if len(bs) > 1 {
		out.more = append([]binding(nil), bs[1:]...)
	}
	return out
}

type lease struct {
	incarnation string
	expires     time.Time
}

var _ storage.Bindings = (*Bindings)(nil)

// NewBindings returns an empty store. now may be nil (time.Now).
func NewBindings(now func() time.Time) *Bindings {
	if now == nil {
		now = time.Now
	}
	return &Bindings{
		now:    now,
		users:  make(map[string]bindingSet),
		leases: make(map[string]lease),
	}
}

func checkNode(n storage.Node) error {
	if n.ID == "" || n.Incarnation == "" {
		return fmt.Errorf("%w: node %q has no id or incarnation", storage.ErrInvalid, n.String())
	}
	return nil
}

// Lease implements storage.Bindings.
func (b *Bindings) Lease(_ context.Context, n storage.Node, ttl time.Duration) (bool, error) {
	if err := checkNode(n); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("%w: lease ttl %v", storage.ErrInvalid, ttl)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, storage.ErrClosed
	}
	now := b.now()
	old, ok := b.leases[n.ID]
	fresh := !ok || old.incarnation != n.Incarnation || !now.Before(old.expires)
	b.leases[n.ID] = lease{incarnation: n.Incarnation, expires: now.Add(ttl)}
	return fresh, nil
}

// Bind implements storage.Bindings.
func (b *Bindings) Bind(_ context.Context, n storage.Node, users []string) error {
	if err := checkNode(n); err != nil {
		return err
	}
	for _, u := range users {
		if err := storage.ValidateUser(u); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return storage.ErrClosed
	}
	for _, u := range users {
		set := b.users[u]
		switch {
		case set.first.node == "":
			b.users[u] = bindingSet{first: binding{n.ID, n.Incarnation}}
		case set.first.node == n.ID:
			set.first.incarnation = n.Incarnation // a newer life replaces an older one
			b.users[u] = set
		default:
			found := false
			for i := range set.more {
				if set.more[i].node == n.ID {
					set.more[i].incarnation = n.Incarnation
					found = true
				}
			}
			if !found {
				set.more = append(set.more, binding{n.ID, n.Incarnation})
			}
			b.users[u] = set
		}
	}
	return nil
}

// Unbind implements storage.Bindings.
func (b *Bindings) Unbind(_ context.Context, n storage.Node, users []string) error {
	if err := checkNode(n); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return storage.ErrClosed
	}
	for _, u := range users {
		b.unbindLocked(u, n)
	}
	return nil
}

// unbindLocked removes n's binding of u if n's incarnation holds it.
func (b *Bindings) unbindLocked(u string, n storage.Node) bool {
	set, ok := b.users[u]
	if !ok {
		return false
	}
	list := set.all()
	for i := range list {
		if list[i].node == n.ID && list[i].incarnation == n.Incarnation {
			list[i] = list[len(list)-1]
			list = list[:len(list)-1]
			if len(list) == 0 {
				delete(b.users, u)
			} else {
				b.users[u] = setOf(list)
			}
			return true
		}
	}
	return false
}

// Lookup implements storage.Bindings.
func (b *Bindings) Lookup(_ context.Context, users []string) (map[string][]string, error) {
	for _, u := range users {
		if err := storage.ValidateUser(u); err != nil {
			return nil, fmt.Errorf("lookup: %w", err)
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, storage.ErrClosed
	}
	now := b.now()
	out := make(map[string][]string)
	for _, u := range users {
		set := b.users[u]
		if set.first.node == "" {
			continue
		}
		for _, bd := range append([]binding{set.first}, set.more...) {
			l, ok := b.leases[bd.node]
			if ok && l.incarnation == bd.incarnation && now.Before(l.expires) {
				out[u] = append(out[u], bd.node)
			}
		}
	}
	return out, nil
}

// LeaseHolder implements storage.Bindings.
func (b *Bindings) LeaseHolder(_ context.Context, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: lease holder: empty node ID", storage.ErrInvalid)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return "", storage.ErrClosed
	}
	if l, ok := b.leases[id]; ok && b.now().Before(l.expires) {
		return l.incarnation, nil
	}
	return "", nil
}

// Purge implements storage.Bindings.
func (b *Bindings) Purge(_ context.Context, n storage.Node) (int, error) {
	if err := checkNode(n); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, storage.ErrClosed
	}
	// A scan of every user: purges are rare (a node died) and in memory.
	removed := 0
	for u, set := range b.users {
		if set.first == (binding{n.ID, n.Incarnation}) || slices.Contains(set.more, binding{n.ID, n.Incarnation}) {
			if b.unbindLocked(u, n) {
				removed++
			}
		}
	}
	if l, ok := b.leases[n.ID]; ok && l.incarnation == n.Incarnation {
		delete(b.leases, n.ID)
	}
	return removed, nil
}

// Ping implements storage.Bindings.
func (b *Bindings) Ping(context.Context) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return storage.ErrClosed
	}
	return nil
}

// Close implements storage.Bindings.
func (b *Bindings) Close() error {
	b.mu.Lock()
	b.closed = true
	b.users = nil
	b.mu.Unlock()
	return nil
}
