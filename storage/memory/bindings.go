package memory

import (
	"context"
	"fmt"
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
	users  map[string][]binding                 // user -> bindings, usually one
	leases map[string]lease                     // node ID -> lease
	owned  map[storage.Node]map[string]struct{} // incarnation -> its users
}

type binding struct {
	node, incarnation string
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
		users:  make(map[string][]binding),
		leases: make(map[string]lease),
		owned:  make(map[storage.Node]map[string]struct{}),
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
	own := b.owned[n]
	if own == nil {
		own = make(map[string]struct{})
		b.owned[n] = own
	}
	for _, u := range users {
		list := b.users[u]
		found := false
		for i := range list {
			if list[i].node == n.ID {
				list[i].incarnation = n.Incarnation // a newer life replaces an older one
				found = true
			}
		}
		if !found {
			b.users[u] = append(list, binding{n.ID, n.Incarnation})
		}
		own[u] = struct{}{}
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
		delete(b.owned[n], u)
	}
	return nil
}

// unbindLocked removes n's binding of u if n's incarnation holds it.
func (b *Bindings) unbindLocked(u string, n storage.Node) bool {
	list := b.users[u]
	for i := range list {
		if list[i].node == n.ID && list[i].incarnation == n.Incarnation {
			list[i] = list[len(list)-1]
			list = list[:len(list)-1]
			if len(list) == 0 {
				delete(b.users, u)
			} else {
				b.users[u] = list
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
		for _, bd := range b.users[u] {
			l, ok := b.leases[bd.node]
			if ok && l.incarnation == bd.incarnation && now.Before(l.expires) {
				out[u] = append(out[u], bd.node)
			}
		}
	}
	return out, nil
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
	removed := 0
	for u := range b.owned[n] {
		if b.unbindLocked(u, n) {
			removed++
		}
	}
	delete(b.owned, n)
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
	b.users, b.owned = nil, nil
	b.mu.Unlock()
	return nil
}
