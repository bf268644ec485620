package gossip

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	// Join: a member became live (it joined, or came back after being
	// declared dead, or this node merged with its cluster).
	Join EventType = iota + 1
	// Leave: a member left gracefully or was declared dead.
	Leave
	// Update: a live member changed its Meta.
	Update
)

func (t EventType) String() string {
	switch t {
	case Join:
		return "join"
	case Leave:
		return "leave"
	case Update:
		return "update"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is a membership change, with the member's decoded Meta as of the
// change (for Leave: its last known Meta).
type Event struct {
	Type   EventType
	Member Member
}

// roster is the membership as memberlist reported it through the event
// delegate, and the queue of events not yet delivered. memberlist calls
// the delegate with its own lock held, so the delegate only takes r.mu,
// copies, and signals: it never blocks and never calls into memberlist.
type roster struct {
	mu      sync.Mutex
	members map[string]Member // live members by node name
	queue   []Event           // not yet delivered, oldest first
	last    map[string]int    // node name -> index of its last event in queue
	signal  chan struct{}     // capacity 1: the queue is not empty
}

func newRoster() *roster {
	return &roster{
		members: make(map[string]Member),
		last:    make(map[string]int),
		signal:  make(chan struct{}, 1),
	}
}

// apply records ev, which memberlist reported for the node named name, and
// queues it for delivery. It returns whether ev was merged into an event
// already queued. Per node, the queue keeps memberlist's order, with two
// merges:
//
//   - an Update replaces the Meta of the node's queued Join or Update (the
//     consumer sees the Join, or one Update, with the latest Meta);
//   - a Leave replaces the node's queued Update (the Update no longer
//     matters; the Leave carries the latest Meta).
//
// A Join and a Leave are both kept, so a consumer sees a Leave only for a
// member it saw join, and a short-lived member or a flapping one is seen
// as such. Events of different nodes are not reordered except that a
// merged event keeps the queue position of the one it merged into.
//
// decoded says whether ev.Member's Meta could be decoded; a Leave without it
// carries the Meta last seen. A Leave of a node never seen live is dropped
// (ok is false). count is the number of live members after ev.
func (r *roster) apply(name string, ev Event, decoded bool) (count int, merged, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Type == Leave {
		known, live := r.members[name]
		if !live {
			return len(r.members), false, false
		}
		if !decoded {
			ev.Member = known
		}
		delete(r.members, name)
	} else {
		m := ev.Member
		m.Meta = m.Meta.clone() // the queued event's copy goes to the consumer
		r.members[name] = m
	}
	if i, ok := r.last[name]; ok {
		prev := &r.queue[i]
		switch {
		case ev.Type == Update && (prev.Type == Join || prev.Type == Update):
			prev.Member = ev.Member
			return len(r.members), true, true
		case ev.Type == Leave && prev.Type == Update:
			*prev = ev
			return len(r.members), true, true
		}
	}
	r.last[name] = len(r.queue)
	r.queue = append(r.queue, ev)
	select {
	case r.signal <- struct{}{}:
	default:
	}
	return len(r.members), false, true
}

// take removes and returns the queued events.
func (r *roster) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queue
	r.queue = nil
	clear(r.last)
	return q
}

// list returns the live members sorted by ID, then incarnation.
func (r *roster) list() []Member {
	r.mu.Lock()
	out := make([]Member, 0, len(r.members))
	for _, m := range r.members {
		out = append(out, m)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Incarnation, b.Incarnation)
	})
	for i := range out {
		out[i].Meta = out[i].Meta.clone()
	}
	return out
}

// count returns the number of live members.
func (r *roster) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}

// addrs returns the gossip addresses of the live members.
func (r *roster) addrs() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.members))
	for _, m := range r.members {
		out[m.Addr] = true
	}
	return out
}
