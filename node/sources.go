package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
)

// resyncer is the part of the edge that recovers connections in place.
type resyncer interface {
	Resync(users []string) *edge.Resync
}

// sources keeps a push node's cursor: the resume position its frames
// carry and clients resume from (docs/DECISIONS.md, "Resume from server
// cursors"). Every message at or below the cursor that one of this
// node's connections should get has been handed to the edge, or was
// stored before the connection's replay read the store.
//
// The cursor is the smallest of:
//   - the cursor of this node's own dispatcher, if it has one;
//   - for each other dispatch node (a source), the last cursor its
//     delivery session brought, or, before its first, the cursor this node
//     had when it learned of the source;
//   - holds: while connections resync (a source dropped deliveries, a
//     source died, the binding store lost or could not take bindings),
//     the position they recover from;
//   - the last position at which this node's bindings were verified in
//     the binding store (its lease renewal);
//   - in a cluster, now minus CursorLag, so that a dispatch node this one
//     has not heard of yet cannot be passed by.
//
// A source that stops sending (stuck, partitioned, dead) holds the cursor
// where it was: clients then resume from there. Once gossip says it is
// gone and its lease in the binding store has been dead for AppendGrace
// (so it accepts and routes nothing any more, and its abandoned appends
// are settled), every connection resyncs from its last cursor and it is
// forgotten. A source that ends its session (it drains) is forgotten at
// once. Safe for concurrent use.
type sources struct {
	log  *slog.Logger
	m    *metrics
	now  func() time.Time
	self string

	local       func() string                                        // this node's dispatcher cursor, or nil
	leaseHolder func(ctx context.Context, id string) (string, error) // nil: no binding store to ask
	lag         time.Duration                                        // 0: no cap (standalone)
	appendGrace time.Duration

	mu        sync.Mutex
	edge      resyncer
	srcs      map[string]*source // by node ID
	holds     map[*hold]struct{}
	leaseCap  string // the cursor as of the last verified lease renewal
	leaseLost bool   // the binding store lost this node's bindings; the cap is frozen
	bindCap   string // frozen while bindings could not be written
	stable    string // the smallest of srcs, holds and caps ("" for none)

	stop chan struct{}
	wg   sync.WaitGroup
}

type source struct {
	id, incarnation string
	session         uint64 // the current session's number (0: none yet)
	cursor          string // the last cursor received, any session
	floor           string // the cursor when the source was learned; holds until its first cursor
	ended           bool   // it ended its session cleanly
	gone            bool   // gossip says it left or died
	leaseDeadSince  time.Time
	dropping        bool // every connection resyncs from its cursor; then it is forgotten
}

// position is what the source holds the cursor at.
func (s *source) position() string {
	if s.cursor != "" {
		return s.cursor
	}
	return s.floor
}

type hold struct {
	floor  string
	reason string
}

func newSources(self string, log *slog.Logger, m *metrics) *sources {
	return &sources{self: self, log: log, m: m, now: time.Now, srcs: make(map[string]*source),
		holds: make(map[*hold]struct{}), stop: make(chan struct{})}
}

// Cursor returns the node's cursor.
func (s *sources) Cursor() string {
	s.mu.Lock()
	c := s.stable
	s.mu.Unlock()
	return s.withLive(c)
}

// withLive adds the inputs that move on their own: this node's
// dispatcher and the lag cap.
func (s *sources) withLive(c string) string {
	if s.local != nil {
		c = minCursor(c, s.local())
	}
	if s.lag > 0 {
		c = minCursor(c, storage.PrevID(storage.IDAt(s.now().Add(-s.lag))))
	}
	return c
}

// minCursor is the smaller of two cursors; "" stands for none.
func minCursor(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return min(a, b)
}

// recomputeLocked refreshes stable.
func (s *sources) recomputeLocked() {
	c := ""
	for _, src := range s.srcs {
		if !src.ended {
			c = minCursor(c, src.position())
		}
	}
	for h := range s.holds {
		c = minCursor(c, h.floor)
	}
	c = minCursor(c, s.leaseCap)
	c = minCursor(c, s.bindCap)
	s.stable = c
}

// setEdge gives sources the edge to resync; before it, resyncs only hold.
func (s *sources) setEdge(e resyncer) {
	s.mu.Lock()
	s.edge = e
	s.mu.Unlock()
}

// learn registers a dispatch node gossip announced (or whose session
// arrived first). A new incarnation of a known node means the old one
// died without ending its sessions.
func (s *sources) learn(id, incarnation string) {
	if id == s.self {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.learnLocked(id, incarnation)
}

func (s *sources) learnLocked(id, incarnation string) *source {
	src := s.srcs[id]
	if src != nil && src.incarnation == incarnation {
		if src.gone && !src.dropping {
			src.gone, src.leaseDeadSince = false, time.Time{} // it came back (a refuted death, a healed partition)
		}
		return src
	}
	here := s.withLive(s.stable)
	if src != nil && !src.ended {
		// The old incarnation never said goodbye: it died. Its successor
		// has its ID, so its lease is gone already; recover after the
		// grace, from its last cursor, as for any dead source.
		old := *src
		old.gone, old.leaseDeadSince = true, s.now()
		s.srcs[id+"/"+old.incarnation] = &old
	}
	src = &source{id: id, incarnation: incarnation, floor: here}
	s.srcs[id] = src
	s.recomputeLocked()
	return src
}

// forget marks a source gone (gossip says it left or died).
func (s *sources) forget(id, incarnation string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if src := s.srcs[id]; src != nil && src.incarnation == incarnation && !src.ended {
		src.gone = true
	}
}

// beginBatch handles what comes before a batch's deliveries: a new
// session, and what its sender dropped before it.
func (s *sources) beginBatch(b *rpc.Batch) {
	info := b.Session
	if !info.Cursors || info.Source.ID == s.self {
		return // a push node forwarding a misrouted delivery: not a source
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.learnLocked(info.Source.ID, info.Source.Incarnation)
	if src.gone && !src.dropping {
		src.gone, src.leaseDeadSince = false, time.Time{}
	}
	if b.Hole {
		s.resyncLocked(nil, src.position(), "deliveries missing in a session")
	}
	if info.Number == src.session {
		return
	}
	// A new session. What did its sender drop?
	gap := info.GapAll || len(info.GapUsers) > 0
	switch {
	case src.session != 0 && info.Prev != src.session:
		// It forgot the previous session (it removed this node for a
		// while): anything may be missing.
		s.resyncLocked(nil, src.position(), "a dispatch node forgot this node for a while")
	case gap && info.GapAll:
		s.resyncLocked(nil, src.position(), "a dispatch node dropped deliveries")
	case gap:
		s.resyncLocked(info.GapUsers, src.position(), "a dispatch node dropped deliveries")
	}
	src.session = info.Number
	src.ended = false
}

// endBatch handles what comes after a batch's deliveries: its cursor, and
// the end of the session.
func (s *sources) endBatch(b *rpc.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.srcs[b.Session.Source.ID]
	if src == nil || src.incarnation != b.Session.Source.Incarnation {
		return
	}
	if b.Cursor > src.cursor {
		src.cursor = b.Cursor
	}
	if b.End {
		src.ended = true
		s.log.Info("a dispatch node ended its session", "node", src.id)
	}
	s.recomputeLocked()
}

// resyncLocked asks connections (users, or all for nil) to recover what
// they lack from floor on, and holds the cursor at floor until they have.
func (s *sources) resyncLocked(users []string, floor, reason string) {
	h := &hold{floor: floor, reason: reason}
	s.holds[h] = struct{}{}
	s.recomputeLocked()
	s.m.resyncs.WithLabelValues(reason).Inc()
	who := "all"
	if users != nil {
		who = "some"
	}
	s.log.Info("resyncing connections", "reason", reason, "users", who, "count", len(users), "from", floor)
	e := s.edge
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if e != nil {
			r := e.Resync(users)
			select {
			case <-r.Done():
			case <-s.stop:
				return
			}
		}
		s.mu.Lock()
		delete(s.holds, h)
		s.recomputeLocked()
		s.mu.Unlock()
	}()
}

// leaseVerified records that the binding store held this node's lease,
// and so its bindings, just now: the cursor may go up to here.
func (s *sources) leaseVerified() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaseLost {
		return
	}
	saved := s.leaseCap
	s.leaseCap = ""
	s.recomputeLocked()
	c := s.withLive(s.stable)
	if c == "" {
		c = saved
	}
	s.leaseCap = c
	s.recomputeLocked()
}

// leaseLostData freezes the cursor where the bindings were last verified:
// the binding store lost them (it restarted empty, or the lease lapsed),
// so deliveries since may have gone elsewhere.
func (s *sources) leaseLostData() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaseLost = true
	s.recomputeLocked()
}

// leaseRebound is called once every user is bound again after a loss:
// every connection recovers from the frozen cursor, then it moves again.
func (s *sources) leaseRebound() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leaseLost {
		return
	}
	s.leaseLost = false
	s.resyncLocked(nil, s.leaseCap, "the binding store lost this node's bindings")
}

// bindsFailing freezes the cursor while bindings cannot be written: a
// user connected meanwhile may be missing from the store.
func (s *sources) bindsFailing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bindCap == "" {
		s.bindCap = s.withLive(s.stable)
		s.recomputeLocked()
	}
}

// bindsWritten is called once the bindings that failed are written: their
// users recover what dispatch could not route to them meanwhile.
func (s *sources) bindsWritten(users []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bindCap == "" {
		return
	}
	floor := s.bindCap
	s.bindCap = ""
	s.resyncLocked(users, floor, "bindings could not be written for a while")
}

// checkGone runs every second: a source gossip calls gone whose lease has
// been dead for AppendGrace is recovered from and forgotten.
func (s *sources) checkGone(ctx context.Context) {
	s.mu.Lock()
	var gone []*source
	for _, src := range s.srcs {
		if src.gone && !src.ended && !src.dropping {
			gone = append(gone, src)
		}
	}
	s.mu.Unlock()
	now := s.now()
	for _, src := range gone {
		dead := true
		if s.leaseHolder != nil {
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			holder, err := s.leaseHolder(lctx, src.id)
			cancel()
			if err != nil {
				continue // cannot tell: keep holding
			}
			dead = holder != src.incarnation
		}
		s.mu.Lock()
		switch {
		case !src.gone || src.dropping:
		case !dead:
			src.leaseDeadSince = time.Time{} // alive, just unreachable
		case src.leaseDeadSince.IsZero():
			src.leaseDeadSince = now
		case now.Sub(src.leaseDeadSince) >= s.appendGrace:
			src.dropping = true
			s.dropLocked(src)
		}
		s.mu.Unlock()
	}
}

// dropLocked recovers every connection from src's last cursor, then
// forgets src.
func (s *sources) dropLocked(src *source) {
	s.log.Warn("a dispatch node died without ending its session; every connection recovers what it may have missed",
		"node", src.id, "incarnation", src.incarnation, "from", src.position())
	s.m.resyncs.WithLabelValues("a dispatch node died").Inc()
	floor := src.position()
	e := s.edge
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if e != nil {
			r := e.Resync(nil)
			select {
			case <-r.Done():
			case <-s.stop:
				return
			}
		}
		s.mu.Lock()
		for k, x := range s.srcs {
			if x == src {
				delete(s.srcs, k)
			}
		}
		s.recomputeLocked()
		s.mu.Unlock()
		s.log.Info("recovered from a dead dispatch node", "node", src.id, "from", floor)
	}()
}

// run checks gone sources every second until shutdown.
func (s *sources) run() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-s.stop
			cancel()
		}()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.checkGone(ctx)
				s.mu.Lock()
				s.m.cursorLag.Set(cursorAge(s.withLive(s.stable), s.now()))
				s.mu.Unlock()
			}
		}
	}()
}

// cursorAge is how far behind now a cursor is, in seconds.
func cursorAge(c string, now time.Time) float64 {
	if c == "" {
		return 0
	}
	t, err := storage.ParseID(c)
	if err != nil {
		return 0
	}
	return now.Sub(t).Seconds()
}

// shutdown stops the resyncs and the checker and waits for them.
func (s *sources) shutdown() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// sourceInfo describes a source for /v1/nodes and tests.
type sourceInfo struct {
	ID, Incarnation string
	Cursor          string
	Gone, Ended     bool
}

// list returns the sources, for tests and diagnostics.
func (s *sources) list() []sourceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sourceInfo
	for _, src := range s.srcs {
		out = append(out, sourceInfo{ID: src.id, Incarnation: src.incarnation, Cursor: src.position(), Gone: src.gone, Ended: src.ended})
	}
	return out
}
