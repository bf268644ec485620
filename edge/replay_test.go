package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldpush/herald/storage"
)

// storeFor fills a fakeStore with n messages to user of size bytes of data
// each, and returns their IDs.
func storeFor(store *fakeStore, ids *storage.IDGenerator, user string, n, size int) []string {
	var out []string
	for range n {
		id, _ := ids.Next()
		m := msg(id, fmt.Sprintf("%q", strings.Repeat("x", max(size-2, 0))))
		m.To = []string{user}
		store.mu.Lock()
		store.msgs = append(store.msgs, m)
		store.mu.Unlock()
		out = append(out, id)
	}
	return out
}

// With seen=, replay is exact: what is after since, minus what the client
// says it has, and no window before since. Without seen=, the window
// applies (older clients).
func TestExactResumeWithSeen(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store; c.ReplayWindow = time.Hour })
	ids := storage.NewIDGenerator(nil)
	got := storeFor(store, ids, "alice", 6, 10)
	since := got[1]
	// The client has since and, above it, got[3] and got[5].
	c := dialWS(t, e, "alice", "since="+since+"&seen="+got[3]+","+got[5])
	for _, want := range []string{got[2], got[4]} {
		if f := c.expectType("message"); f.ID != want {
			t.Fatalf("exact replay sent %s, want %s", f.ID, want)
		}
	}
	if r := c.expectType("ready"); r.Replayed != 2 || r.Cursor < since {
		t.Fatalf("ready %+v: want 2 replayed and a cursor not below since", r)
	}
	// seen= present but empty is exact too.
	c2 := dialWS(t, e, "alice", "since="+got[4]+"&seen=")
	if f := c2.expectType("message"); f.ID != got[5] {
		t.Fatalf("got %s, want %s", f.ID, got[5])
	}
	c2.expectType("ready")
	// No seen=: the hour-long window replays everything before since too.
	c3 := dialWS(t, e, "alice", "since="+got[4])
	for _, want := range []string{got[0], got[1], got[2], got[3], got[5]} {
		if f := c3.expectType("message"); f.ID != want {
			t.Fatalf("windowed replay sent %s, want %s", f.ID, want)
		}
	}
	c3.expectType("ready")

	for _, q := range []string{"since=" + since + "&seen=nope", "seen=" + strings.Repeat(got[0]+",", 200)} {
		if status, body := httpDo(t, e, q, upgradeHeader("u:alice")); status != 400 || !strings.Contains(body, "bad_seen") {
			t.Fatalf("%s: %d %s, want 400 bad_seen", q[:20], status, body)
		}
	}
}

// The ready frame carries the listener's cursor, never below since.
func TestReadyCarriesListenerCursor(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store })
	ids := storage.NewIDGenerator(nil)
	a, _ := ids.Next()
	b, _ := ids.Next()
	e.rec.setCursor(a)
	if r := dialWS(t, e, "alice", "").expectType("ready"); r.Cursor != a {
		t.Fatalf("ready cursor %q, want the listener's %q", r.Cursor, a)
	}
	if r := dialWS(t, e, "alice", "since="+b+"&seen=").expectType("ready"); r.Cursor != b {
		t.Fatalf("ready cursor %q, want since %q (the listener's is older)", r.Cursor, b)
	}
	// A frame encoded with a cursor carries it.
	c := dialWS(t, e, "bob", "")
	c.expectType("ready")
	id, at := ids.Next()
	e.srv.Deliver(EncodeMessage(id, json.RawMessage(`1`), at, b), "bob")
	if f := c.expectType("message"); f.Cursor != b || f.ID != id {
		t.Fatalf("message frame %+v, want cursor %s", f, b)
	}
}

// A replay reads the store page by page, each page bounded in bytes, and
// only once the client has taken the previous one: a client that does not
// read holds its own replay (and at most about two write queues of memory),
// never a replay worker, and is closed as a slow consumer after
// PingInterval. Another client's replay goes on meanwhile.
func TestReplayPacedByTheClient(t *testing.T) {
	t.Parallel()
	const wq = 64 << 10
	var maxQueued atomic.Int64
	var calls sync.Map // user -> *atomic.Int64
	store := &fakeStore{}
	var e *testEdge
	store.onReplay = func(q storage.ReplayQuery) {
		n, _ := calls.LoadOrStore(q.User, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if q.MaxBytes <= 0 || q.MaxBytes > wq/4 {
			t.Errorf("replay page of %d bytes, want at most %d", q.MaxBytes, wq/4)
		}
		for _, c := range e.srv.registry.userConns(q.User) {
			c.mu.Lock()
			if int64(c.wbytes) > maxQueued.Load() {
				maxQueued.Store(int64(c.wbytes))
			}
			c.mu.Unlock()
		}
	}
	e = startEdge(t, false, func(c *Config) {
		c.Replayer = store
		c.ReplayWorkers = 1
		c.WriteQueueBytes = wq
		c.MaxMessageBytes = 16 << 10
		c.PingInterval = 2 * time.Second
		c.IdleTimeout = 20 * time.Second
	})
	ids := storage.NewIDGenerator(nil)
	start := storage.IDAt(time.Now().Add(-time.Minute))
	slowIDs := storeFor(store, ids, "slow", 3000, 8<<10) // 24 MB: more than any socket buffers
	quickIDs := storeFor(store, ids, "quick", 3, 10)

	slow := dialRawQuery(t, e, "slow", "since="+start+"&seen=", 4096)
	pages := func() int64 {
		n, ok := calls.Load("slow")
		if !ok {
			return 0
		}
		return n.(*atomic.Int64).Load()
	}
	eventually(t, 5*time.Second, "the slow replay to start", func() bool { return pages() > 0 })
	// The one worker is free for another client while the slow one waits.
	quick := dialWS(t, e, "quick", "since="+start+"&seen=")
	for _, want := range quickIDs {
		if f := quick.expectType("message"); f.ID != want {
			t.Fatalf("quick got %s, want %s", f.ID, want)
		}
	}
	quick.expectType("ready")
	if p := pages(); p >= int64(len(slowIDs)/2) {
		t.Fatalf("the store was asked for %d pages for a client that reads nothing", p)
	}
	// Now the slow client reads: it gets everything, in order.
	for i, want := range slowIDs {
		f := slow.expectText()
		if f.Type != "message" || f.ID != want {
			t.Fatalf("slow client frame %d: %+v, want message %s", i, f, want)
		}
	}
	if r := slow.expectText(); r.Type != "ready" || r.Replayed != len(slowIDs) {
		t.Fatalf("after the replay: %+v", r)
	}
	if m := maxQueued.Load(); m > wq/4+16<<10 {
		t.Fatalf("a page was read with %d bytes queued; want at most a page (%d) plus a message", m, wq/4)
	}

	// A client that never reads is closed as a slow consumer.
	slow.nc.Close()
	eventually(t, 5*time.Second, "the first slow client to be gone", func() bool {
		return len(e.srv.registry.userConns("slow")) == 0
	})
	before := testutil.ToFloat64(e.srv.metrics.slowConsumers)
	dialRawQuery(t, e, "slow", "since="+start+"&seen=", 4096)
	eventually(t, 5*time.Second, "the stuck client to connect", func() bool {
		return len(e.srv.registry.userConns("slow")) == 1
	})
	// It cannot even be sent the close frame; it is dropped.
	eventually(t, 10*time.Second, "the stuck replay to be dropped", func() bool {
		return len(e.srv.registry.userConns("slow")) == 0
	})
	if got := testutil.ToFloat64(e.srv.metrics.slowConsumers) - before; got != 1 {
		t.Fatalf("%v slow consumers counted, want 1", got)
	}
}

// Replays do not hold handshake slots: with one slot, a client connects
// while another's replay waits on the store.
func TestReplayDoesNotHoldHandshakeSlots(t *testing.T) {
	t.Parallel()
	store := &fakeStore{gate: make(chan struct{})}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store; c.MaxHandshakes = 1 })
	ids := storage.NewIDGenerator(nil)
	got := storeFor(store, ids, "alice", 1, 10)
	a := dialWS(t, e, "alice", "since="+storage.PrevID(got[0])+"&seen=") // its replay waits at the gate
	b := dialWS(t, e, "bob", "")
	b.expectType("ready")
	close(store.gate)
	if f := a.expectType("message"); f.ID != got[0] {
		t.Fatalf("got %s", f.ID)
	}
	a.expectType("ready")
}

// Resync: the client is asked for its position, answers, and gets what it
// lacks (from the store, minus what it says it has), then ready; live
// frames that arrive meanwhile follow, without duplicates. Resync is done
// once it has.
func TestResyncReplaysInPlace(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		store := &fakeStore{}
		e := startEdge(t, portable, func(c *Config) { c.Replayer = store })
		ids := storage.NewIDGenerator(nil)
		cursor, _ := ids.Next()
		e.rec.setCursor(cursor)
		c := dialWS(t, e, "alice", "")
		if r := c.expectType("ready"); r.Cursor != cursor {
			t.Fatalf("ready %+v", r)
		}
		// The node missed five messages for alice; the client got two.
		missed := storeFor(store, ids, "alice", 5, 10)
		store.gate = make(chan struct{})
		replaying := make(chan struct{}, 1)
		store.onReplay = func(storage.ReplayQuery) {
			select {
			case replaying <- struct{}{}:
			default:
			}
		}
		r := e.srv.Resync([]string{"alice"})
		c.expectType("resync")
		select {
		case <-r.Done():
			t.Fatal("resync done before the client answered")
		default:
		}
		c.send(map[string]any{"type": "resume", "since": cursor, "seen": []string{missed[0], missed[3]}})
		<-replaying
		// While the replay reads the store, live frames are held: a copy of
		// a missed message, and a new one.
		live, at := ids.Next()
		e.srv.Deliver(EncodeMessage(missed[4], json.RawMessage(`4`), time.Now(), ""), "alice")
		e.srv.Deliver(EncodeMessage(live, json.RawMessage(`"live"`), at, ""), "alice")
		close(store.gate)
		for _, want := range []string{missed[1], missed[2], missed[4]} {
			if f := c.expectType("message"); f.ID != want {
				t.Fatalf("resync replay sent %s, want %s", f.ID, want)
			}
		}
		if f := c.expectType("ready"); f.Replayed != 3 || f.Cursor < cursor {
			t.Fatalf("ready after resync: %+v", f)
		}
		if f := c.expectType("message"); f.ID != live {
			t.Fatalf("after ready got %s, want %s (and no second copy of %s)", f.ID, live, missed[4])
		}
		select {
		case <-r.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("resync not done: %d pending", r.Pending())
		}
	})
}

// A client that does not answer a resync is closed with CloseResync; a
// resume nobody asked for replays nothing.
func TestResyncUnansweredCloses(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store; c.ResyncTimeout = 300 * time.Millisecond })
	ids := storage.NewIDGenerator(nil)
	storeFor(store, ids, "alice", 3, 10)
	c := dialWS(t, e, "alice", "")
	c.expectType("ready")
	c.send(map[string]any{"type": "resume", "since": ""})
	c.send(map[string]string{"type": "ping"})
	if f := c.read(); f.Type != "pong" {
		t.Fatalf("an unasked resume replayed: got %+v before the pong", f)
	}
	r := e.srv.Resync(nil)
	c.expectType("resync")
	c.expectClose(CloseResync)
	select {
	case <-r.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("resync not done after the connection closed")
	}
	// With nobody connected, a resync is done at once.
	select {
	case <-e.srv.Resync(nil).Done():
	case <-time.After(time.Second):
		t.Fatal("empty resync not done")
	}
}

// A connection whose handshake is still running when Drain starts is sent
// elsewhere too.
func TestDrainCatchesHandshakeInProgress(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var waiting atomic.Bool
	e := startEdge(t, false, func(c *Config) {
		c.Listener = &gatedSettle{recorder: &recorder{}, gate: gate, waiting: &waiting}
	})
	type dialed struct {
		c   *websocket.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, _, err := websocket.Dial(ctxT(t, 10*time.Second), e.wsURL(""), &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer u:alice"}},
		})
		done <- dialed{c, err}
	}()
	eventually(t, 5*time.Second, "the handshake to wait in Settle", waiting.Load)
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		drained <- e.srv.Drain(ctx, func(string) string { return "ws://elsewhere/ws" }, 0)
	}()
	eventually(t, 5*time.Second, "drain to start", func() bool { return e.srv.State() == StateDraining })
	close(gate)
	d := <-done
	if d.err != nil {
		t.Fatal(d.err)
	}
	c := &wsClient{t: t, c: d.c}
	t.Cleanup(func() { d.c.CloseNow() })
	if f := c.expectType("reconnect"); f.URL != "ws://elsewhere/ws" {
		t.Fatalf("reconnect %+v", f)
	}
	c.expectClose(CloseRestart)
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// gatedSettle holds Settle until gate is closed.
type gatedSettle struct {
	*recorder
	gate    chan struct{}
	waiting *atomic.Bool
}

func (g *gatedSettle) Settle(ctx context.Context, user string) string {
	g.waiting.Store(true)
	select {
	case <-g.gate:
	case <-ctx.Done():
	}
	return g.recorder.Settle(ctx, user)
}

// A store that fails for a while (down, too busy) makes the replay wait
// and read the page again, not close the connection.
func TestReplayRetriesWhileTheStoreFails(t *testing.T) {
	t.Parallel()
	store := &fakeStore{err: fmt.Errorf("overloaded: %w", storage.ErrUnavailable)}
	var calls atomic.Int32
	store.onReplay = func(storage.ReplayQuery) {
		if calls.Add(1) == 3 {
			store.mu.Lock()
			store.err = nil
			store.mu.Unlock()
		}
	}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store })
	ids := storage.NewIDGenerator(nil)
	got := storeFor(store, ids, "alice", 2, 10)
	c := dialWS(t, e, "alice", "since="+storage.PrevID(got[0])+"&seen=")
	for _, want := range got {
		if f := c.expectType("message"); f.ID != want {
			t.Fatalf("got %s, want %s", f.ID, want)
		}
	}
	c.expectType("ready")
	if n := testutil.ToFloat64(e.srv.metrics.replayRetries); n < 2 {
		t.Fatalf("%v retries, want the failed pages read again", n)
	}
}

// With the kernel's send buffer capped, a client that does not read is
// closed as a slow consumer once about WriteQueueBytes is queued for it,
// not after megabytes sit in the kernel.
func TestSendBufferCapMakesSlowConsumersVisible(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, func(c *Config) { c.WriteQueueBytes = 128 << 10; c.SendBufferBytes = 16 << 10 })
	r := dialRawQuery(t, e, "sleepy", "", 4096)
	eventually(t, 5*time.Second, "the client to register", func() bool { return e.srv.Online("sleepy") })
	ids := storage.NewIDGenerator(nil)
	data := json.RawMessage(fmt.Sprintf("%q", strings.Repeat("z", 8<<10)))
	sent := 0
	for ; sent < 200 && testutil.ToFloat64(e.srv.metrics.slowConsumers) == 0; sent++ { // 1.6 MB at most
		id, at := ids.Next()
		e.srv.Deliver(EncodeMessage(id, data, at, ""), "sleepy")
	}
	if sent == 200 {
		t.Fatalf("1.6 MB queued for a client that reads nothing and it is still open")
	}
	if sent*(8<<10) > 512<<10 {
		t.Fatalf("the slow consumer was closed after %d KB, want about the 128 KiB queue plus the capped buffers", sent*8)
	}
	r.expectClose(CloseSlowConsumer)
}

// While the store fails pages, fewer are read at once (halved per
// failure, down to one); once it serves them again, the concurrency grows
// back, one per page, to ReplayWorkers.
func TestReplayConcurrencyAdaptsToTheStore(t *testing.T) {
	t.Parallel()
	store := &fakeStore{err: fmt.Errorf("overloaded: %w", storage.ErrUnavailable)}
	var calls atomic.Int32
	var e *testEdge
	limit := func() float64 { return testutil.ToFloat64(e.srv.metrics.replayLimit) }
	var atRecovery atomic.Value // the concurrency when the store recovers
	store.onReplay = func(storage.ReplayQuery) {
		if calls.Add(1) == 4 {
			atRecovery.Store(limit())
			store.mu.Lock()
			store.err = nil
			store.mu.Unlock()
		}
	}
	e = startEdge(t, false, func(c *Config) { c.Replayer = store; c.ReplayWorkers = 8; c.ReplayPage = 1 })
	if l := limit(); l != 8 {
		t.Fatalf("concurrency %v before any replay, want ReplayWorkers (8)", l)
	}
	ids := storage.NewIDGenerator(nil)
	got := storeFor(store, ids, "alice", 12, 10)
	c := dialWS(t, e, "alice", "since="+storage.PrevID(got[0])+"&seen=")
	first := c.expectType("message")
	if first.ID != got[0] {
		t.Fatalf("got %s, want %s", first.ID, got[0])
	}
	// Three pages failed: 8 -> 4 -> 2 -> 1.
	if l := atRecovery.Load(); l != 1.0 {
		t.Fatalf("concurrency %v after three failed pages, want 1", l)
	}
	for _, want := range got[1:] {
		if f := c.expectType("message"); f.ID != want {
			t.Fatalf("got %s, want %s", f.ID, want)
		}
	}
	c.expectType("ready")
	eventually(t, 5*time.Second, "the concurrency to grow back", func() bool { return limit() == 8 })
}

// The replayed IDs a connection remembers are bounded, newest kept, so a
// replay's memory does not grow with its backlog.
func TestIDSetKeepsTheNewest(t *testing.T) {
	s := newIDSet(3)
	for _, id := range []string{"a", "b", "c", "b", "d", "e"} {
		s.add(id)
	}
	if s.len() != 3 || s.has("a") || s.has("b") || !s.has("c") || !s.has("d") || !s.has("e") {
		t.Fatalf("set %v, want c d e", s.order)
	}
}
