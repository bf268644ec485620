package edge

import (
	"sync"
)

// registryShards spreads users over independently locked maps, so that
// connects, disconnects and deliveries for different users rarely contend.
const registryShards = 64

// registry maps user IDs to this edge's open connections.
type registry struct {
	shards   [registryShards]regShard
	listener Listener
}

type regShard struct {
	mu    sync.RWMutex
	users map[string]connList
}

// connList is a user's connections: one inline (the common case costs no
// allocation), more in a slice.
type connList struct {
	first *Conn
	more  []*Conn
}

func (l connList) len() int {
	if l.first == nil {
		return 0
	}
	return 1 + len(l.more)
}

// each calls f for every connection.
func (l connList) each(f func(*Conn)) {
	if l.first == nil {
		return
	}
	f(l.first)
	for _, c := range l.more {
		f(c)
	}
}

func newRegistry(l Listener) *registry {
	r := &registry{listener: l}
	for i := range r.shards {
		r.shards[i].users = make(map[string]connList)
	}
	return r
}

func (r *registry) shard(user string) *regShard {
	// FNV-1a, inline so that it does not allocate.
	h := uint32(2166136261)
	for i := 0; i < len(user); i++ {
		h ^= uint32(user[i])
		h *= 16777619
	}
	return &r.shards[h%registryShards]
}

// add registers c; the user's first connection tells the listener.
func (r *registry) add(c *Conn) {
	s := r.shard(c.user)
	s.mu.Lock()
	list := s.users[c.user]
	if list.first == nil {
		s.users[c.user] = connList{first: c}
		if r.listener != nil {
			r.listener.Online(c.user)
		}
	} else {
		list.more = append(list.more, c)
		s.users[c.user] = list
	}
	s.mu.Unlock()
}

// remove unregisters c; the user's last connection tells the listener. It
// reports whether c was registered.
func (r *registry) remove(c *Conn) bool {
	s := r.shard(c.user)
	s.mu.Lock()
	defer s.mu.Unlock()
	list, ok := s.users[c.user]
	if !ok {
		return false
	}
	switch {
	case list.first == c && len(list.more) == 0:
		delete(s.users, c.user)
		if r.listener != nil {
			r.listener.Offline(c.user)
		}
		return true
	case list.first == c:
		last := len(list.more) - 1
		list.first = list.more[last]
		list.more[last] = nil
		list.more = list.more[:last]
	default:
		i := -1
		for j, x := range list.more {
			if x == c {
				i = j
			}
		}
		if i < 0 {
			return false
		}
		last := len(list.more) - 1
		list.more[i] = list.more[last]
		list.more[last] = nil
		list.more = list.more[:last]
	}
	if len(list.more) == 0 {
		list.more = nil
	}
	s.users[c.user] = list
	return true
}

// deliver queues f on every connection of user and returns how many took it.
func (r *registry) deliver(user string, f *Frame) int {
	s := r.shard(user)
	n := 0
	s.mu.RLock()
	s.users[user].each(func(c *Conn) {
		if c.deliver(f) {
			n++
		}
	})
	s.mu.RUnlock()
	return n
}

// deliverShard queues f on every connection in shard i.
func (r *registry) deliverShard(i int, f *Frame) int {
	s := &r.shards[i]
	n := 0
	s.mu.RLock()
	for _, list := range s.users {
		list.each(func(c *Conn) {
			if c.deliver(f) {
				n++
			}
		})
	}
	s.mu.RUnlock()
	return n
}

// userConns returns user's connections.
func (r *registry) userConns(user string) []*Conn {
	s := r.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Conn
	s.users[user].each(func(c *Conn) { out = append(out, c) })
	return out
}

func (r *registry) online(user string) bool {
	s := r.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.users[user].len() > 0
}

// users returns the users with a connection here.
func (r *registry) userList() []string {
	var out []string
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for u := range s.users {
			out = append(out, u)
		}
		s.mu.RUnlock()
	}
	return out
}

// shardUsers returns the users in shard i.
func (r *registry) shardUsers(i int) []string {
	s := &r.shards[i]
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.users))
	for u := range s.users {
		out = append(out, u)
	}
	return out
}

// conns returns every registered connection.
func (r *registry) conns() []*Conn {
	var out []*Conn
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for _, list := range s.users {
			list.each(func(c *Conn) { out = append(out, c) })
		}
		s.mu.RUnlock()
	}
	return out
}
