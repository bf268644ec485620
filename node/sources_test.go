package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldpush/herald/node/rpc"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/memory"
)

func testSources(t *testing.T) *sources {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := newSources("self", slog.New(slog.DiscardHandler), m)
	t.Cleanup(s.shutdown)
	return s
}

func batch(src, inc string, session, prev uint64, cursor string) *rpc.Batch {
	return &rpc.Batch{Session: rpc.SessionInfo{Source: rpc.Source{ID: src, Incarnation: inc}, Number: session, Prev: prev, Cursors: true}, Cursor: cursor}
}

func deliver(s *sources, b *rpc.Batch) {
	s.beginBatch(b)
	s.endBatch(b)
}

// waitCursor polls s's cursor until it is want.
func waitCursor(t *testing.T, s *sources, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Cursor() != want {
		if time.Now().After(deadline) {
			t.Fatalf("cursor %q, want %q", s.Cursor(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// The cursor is the smallest of the sources' last cursors; a source known
// but silent holds it where it was when the source was learnt; a source
// that ends its session no longer counts.
func TestSourcesCursorIsTheSlowest(t *testing.T) {
	s := testSources(t)
	if s.Cursor() != "" {
		t.Fatalf("no source, no cursor: %q", s.Cursor())
	}
	deliver(s, batch("d1", "1", 1, 0, "c30"))
	deliver(s, batch("d2", "1", 7, 0, "c20"))
	if got := s.Cursor(); got != "c20" {
		t.Fatalf("cursor %q, want the slower source's c20", got)
	}
	deliver(s, batch("d2", "1", 7, 0, "c40"))
	if got := s.Cursor(); got != "c30" {
		t.Fatalf("cursor %q, want c30", got)
	}
	s.learn("d3", "1") // gossip announces it; it has said nothing yet
	deliver(s, batch("d1", "1", 1, 0, "c50"))
	deliver(s, batch("d2", "1", 7, 0, "c50"))
	if got := s.Cursor(); got != "c30" {
		t.Fatalf("cursor %q: a silent new source holds it at c30", got)
	}
	deliver(s, batch("d3", "1", 2, 0, "c45"))
	if got := s.Cursor(); got != "c45" {
		t.Fatalf("cursor %q, want c45", got)
	}
	end := batch("d3", "1", 2, 0, "c46")
	end.End = true
	deliver(s, end)
	if got := s.Cursor(); got != "c50" {
		t.Fatalf("cursor %q after d3 ended, want c50", got)
	}
	// Older cursors never move it back; the local dispatcher and the lag
	// cap bound it too.
	deliver(s, batch("d1", "1", 1, 0, "c10"))
	s.local = func() string { return "c48" }
	if got := s.Cursor(); got != "c48" {
		t.Fatalf("cursor %q, want the local c48", got)
	}
}

// A new session whose sender dropped deliveries holds the cursor at the
// old session's last cursor while the connections resync (here there are
// none, so it is over at once); one that forgot its previous session
// resyncs everyone.
func TestSourcesGapResyncs(t *testing.T) {
	s := testSources(t)
	deliver(s, batch("d1", "1", 1, 0, "c10"))
	b := batch("d1", "1", 2, 1, "")
	b.Session.GapUsers = []string{"alice"}
	deliver(s, b)
	if got := testutilCount(s, "a dispatch node dropped deliveries"); got != 1 {
		t.Fatalf("%v resyncs for dropped deliveries, want 1", got)
	}
	deliver(s, batch("d1", "1", 5, 3, "c20")) // prev 3: it forgot session 2
	if got := testutilCount(s, "a dispatch node forgot this node for a while"); got != 1 {
		t.Fatalf("%v resyncs for a forgotten session, want 1", got)
	}
	waitCursor(t, s, "c20")
	// A push node that only forwards (no cursors) is not a source.
	fwd := batch("p9", "1", 1, 0, "c99")
	fwd.Session.Cursors = false
	deliver(s, fwd)
	if len(s.list()) != 1 {
		t.Fatalf("sources %+v: a forwarding push node counted", s.list())
	}
}

func testutilCount(s *sources, reason string) float64 {
	return testutil.ToFloat64(s.m.resyncs.WithLabelValues(reason))
}

// A source gossip calls gone holds the cursor while its lease lives
// (partitioned, not dead); once the lease has been dead for AppendGrace,
// everyone resyncs from its last cursor and it is forgotten.
func TestSourcesDeadSourceForgotten(t *testing.T) {
	s := testSources(t)
	b := memory.NewBindings(nil)
	t.Cleanup(func() { b.Close() })
	s.leaseHolder = b.LeaseHolder
	s.appendGrace = 100 * time.Millisecond
	ctx := context.Background()
	if _, err := b.Lease(ctx, storage.Node{ID: "d1", Incarnation: "1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	deliver(s, batch("d1", "1", 1, 0, "c10"))
	deliver(s, batch("d2", "1", 1, 0, "c30"))
	s.forget("d1", "1")
	for range 3 {
		s.checkGone(ctx)
		time.Sleep(50 * time.Millisecond)
	}
	if got := s.Cursor(); got != "c10" {
		t.Fatalf("cursor %q: a gone source with a live lease must hold it", got)
	}
	if _, err := b.Purge(ctx, storage.Node{ID: "d1", Incarnation: "1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Cursor() != "c30" {
		if time.Now().After(deadline) {
			t.Fatalf("cursor %q: the dead source was not forgotten", s.Cursor())
		}
		s.checkGone(ctx)
		time.Sleep(20 * time.Millisecond)
	}
	// A new incarnation of a node makes the old one dead at once.
	deliver(s, batch("d2", "2", 1, 0, "c50"))
	found := false
	for _, x := range s.list() {
		if x.ID == "d2" && x.Incarnation == "1" && x.Gone {
			found = true
		}
	}
	if !found {
		t.Fatalf("sources %+v: the old incarnation is not marked gone", s.list())
	}
}

// The binding store's view caps the cursor: verified renewals move the
// cap, a lost lease freezes it until every user is bound again.
func TestSourcesLeaseCap(t *testing.T) {
	s := testSources(t)
	local := "c10"
	s.local = func() string { return local }
	s.leaseVerified()
	local = "c20"
	if got := s.Cursor(); got != "c10" {
		t.Fatalf("cursor %q: it must not pass the last verified renewal", got)
	}
	s.leaseVerified()
	if got := s.Cursor(); got != "c20" {
		t.Fatalf("cursor %q after a renewal, want c20", got)
	}
	s.leaseLostData()
	local = "c30"
	s.leaseVerified() // ignored while lost
	if got := s.Cursor(); got != "c20" {
		t.Fatalf("cursor %q: a lost lease freezes it", got)
	}
	s.leaseRebound()
	verifyUntil(t, s, "c30")
	s.bindsFailing()
	local = "c40"
	s.leaseVerified()
	if got := s.Cursor(); got != "c30" {
		t.Fatalf("cursor %q: failing binds freeze it", got)
	}
	s.bindsWritten([]string{"alice"})
	verifyUntil(t, s, "c40")
}

// verifyUntil renews the lease (as presence does every second) until the
// cursor is want: a resync's hold may still be in place at the first.
func verifyUntil(t *testing.T, s *sources, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.leaseVerified(); s.Cursor() != want; s.leaseVerified() {
		if time.Now().After(deadline) {
			t.Fatalf("cursor %q, want %q", s.Cursor(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
