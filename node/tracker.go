package node

import (
	"container/heap"
	"sort"
	"sync"
	"time"

	"github.com/heraldpush/herald/storage"
)

// tracker issues this node's message IDs and remembers which accepted
// messages are not routed yet, so that the node can say how far its
// routing has got: Cursor is a message ID such that every message at or
// below it that this node will ever route has been routed. It is the
// cursor this node sends to every push node (docs/DECISIONS.md, "Resume
// from server cursors").
//
// An ID is open from the moment it is issued (before the store is
// written, so a slow append holds the cursor back) until Done: routed,
// refused, or settled as never stored. IDs that come from elsewhere (a
// collect-only node hands its messages to this dispatch node) are opened
// with Adopt. It is safe for concurrent use.
type tracker struct {
	mu  sync.Mutex
	gen *storage.IDGenerator

	own  []ownID // issued here, in ID order; the done ones at the front are trimmed
	head int
	open int // own IDs not done

	adopted adoptedHeap
	counts  map[string]int // adopted ID -> times adopted and not done

	// upstream holds, per collect-only node that hands messages to this
	// one, its last cursor: this node's cursor never passes it, since
	// that node may still hand over anything above it.
	upstream map[string]string
}

type ownID struct {
	id   string
	done bool
}

func newTracker(now func() time.Time) *tracker {
	return &tracker{gen: storage.NewIDGenerator(now), counts: make(map[string]int), upstream: make(map[string]string)}
}

// Issue returns a new message ID and the time it encodes, open.
func (t *tracker) Issue() (string, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id, at := t.gen.Next()
	t.own = append(t.own, ownID{id: id})
	t.open++
	return id, at
}

// Adopt opens an ID issued elsewhere. Every Adopt needs its own Done.
func (t *tracker) Adopt(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts[id] == 0 {
		heap.Push(&t.adopted, id)
	}
	t.counts[id]++
}

// Done closes an ID opened by Issue or Adopt. Closing an ID that is not
// open does nothing.
func (t *tracker) Done(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.counts[id]; n > 0 {
		if n == 1 {
			delete(t.counts, id)
		} else {
			t.counts[id] = n - 1
		}
		return
	}
	own := t.own[t.head:]
	i := sort.Search(len(own), func(i int) bool { return own[i].id >= id })
	if i == len(own) || own[i].id != id || own[i].done {
		return
	}
	own[i].done = true
	t.open--
	for t.head < len(t.own) && t.own[t.head].done {
		t.own[t.head] = ownID{}
		t.head++
	}
	if t.head == len(t.own) {
		t.own, t.head = t.own[:0], 0
	} else if t.head >= 1024 && t.head*2 >= len(t.own) {
		n := copy(t.own, t.own[t.head:])
		clear(t.own[n:])
		t.own, t.head = t.own[:n], 0
	}
}

// HoldUpstream registers collect-only node key (ID/incarnation), which
// may hand messages over: until its first cursor, the cursor stays where
// it is now.
func (t *tracker) HoldUpstream(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.upstream[key]; !ok {
		t.upstream[key] = t.cursorLocked()
	}
}

// SetUpstream records collect-only node key's cursor.
func (t *tracker) SetUpstream(key, cursor string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.upstream[key]; !ok || cursor > cur {
		t.upstream[key] = cursor
	}
}

// DropUpstream forgets a collect-only node that is gone for good.
func (t *tracker) DropUpstream(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.upstream, key)
}

// Upstream returns the collect-only nodes held for, by key.
func (t *tracker) Upstream() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.upstream))
	for k := range t.upstream {
		out = append(out, k)
	}
	return out
}

// Cursor returns the greatest ID at or below which every message this
// node will route has been routed.
func (t *tracker) Cursor() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cursorLocked()
}

func (t *tracker) cursorLocked() string {
	low := t.gen.Floor()
	if t.head < len(t.own) {
		low = min(low, t.own[t.head].id)
	}
	for t.adopted.Len() > 0 {
		top := t.adopted[0]
		if t.counts[top] > 0 {
			low = min(low, top)
			break
		}
		heap.Pop(&t.adopted) // done: drop it lazily
	}
	c := storage.PrevID(low)
	for _, u := range t.upstream {
		c = min(c, u)
	}
	return c
}

// Open returns how many IDs are open.
func (t *tracker) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.open + len(t.counts)
}

// adoptedHeap is a min-heap of IDs.
type adoptedHeap []string

func (h adoptedHeap) Len() int           { return len(h) }
func (h adoptedHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h adoptedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *adoptedHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *adoptedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
