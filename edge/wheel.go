package edge

import (
	"sync"
	"sync/atomic"
)

// wheel is a hashed timing wheel for pings and idle checks: one slot per
// Tick of the ping interval, each connection in one slot, and one slot
// visited per tick. Every connection is thus visited once per PingInterval,
// with no timer per connection and no work for connections in other slots.
type wheel struct {
	slots []wheelSlot
	cur   atomic.Int32
	buf   []*Conn // scratch for tick; only the ticking goroutine uses it
}

type wheelSlot struct {
	mu   sync.Mutex
	head *Conn
}

func newWheel(n int) *wheel {
	w := &wheel{slots: make([]wheelSlot, max(n, 1))}
	w.cur.Store(0)
	return w
}

// add puts c in the slot visited last, a full interval from now.
func (w *wheel) add(c *Conn) {
	i := int32(int(w.cur.Load()+int32(len(w.slots))-1) % len(w.slots))
	s := &w.slots[i]
	s.mu.Lock()
	c.prev, c.next = nil, s.head
	if s.head != nil {
		s.head.prev = c
	}
	s.head = c
	atomic.StoreInt32(&c.slot, i)
	s.mu.Unlock()
}

// remove takes c out of its slot, if it is in one.
func (w *wheel) remove(c *Conn) {
	i := atomic.LoadInt32(&c.slot)
	if i < 0 {
		return
	}
	s := &w.slots[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	if atomic.LoadInt32(&c.slot) != i {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	atomic.StoreInt32(&c.slot, -1)
}

// tick advances to the next slot and calls visit for each connection in
// it, with no lock held.
func (w *wheel) tick(visit func(*Conn)) {
	i := (int(w.cur.Load()) + 1) % len(w.slots)
	w.cur.Store(int32(i))
	s := &w.slots[i]
	w.buf = w.buf[:0]
	s.mu.Lock()
	for c := s.head; c != nil; c = c.next {
		w.buf = append(w.buf, c)
	}
	s.mu.Unlock()
	for j, c := range w.buf {
		visit(c)
		w.buf[j] = nil
	}
}

// deadlineSet tracks connections waiting for something until a deadline:
// the client's close frame, its answer to a resync, its draining of a
// replay page.
type deadlineSet struct {
	mu    sync.Mutex
	conns map[*Conn]uint32 // deadline on the server clock
}

func (s *deadlineSet) add(c *Conn, deadline uint32) {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*Conn]uint32)
	}
	if _, ok := s.conns[c]; !ok {
		s.conns[c] = deadline
	}
	s.mu.Unlock()
}

func (s *deadlineSet) remove(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// expired returns the connections whose deadline is at or before now.
func (s *deadlineSet) expired(now uint32) []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Conn
	for c, d := range s.conns {
		if int32(now-d) >= 0 {
			out = append(out, c)
		}
	}
	return out
}
