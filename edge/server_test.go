package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldpush/herald/storage"
)

func TestConnectReceiveAck(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		c := dialWS(t, e, "alice", "")
		ready := c.expectType("ready")
		if ready.User != "alice" || ready.Node != "test-node" || ready.Replayed != 0 {
			t.Fatalf("ready frame %+v", ready)
		}
		ids := storage.NewIDGenerator(nil)
		id, at := ids.Next()
		if n := e.srv.Deliver(EncodeMessage(id, json.RawMessage(`{"hello":"wörld"}`), at, ""), "alice"); n != 1 {
			t.Fatalf("delivered to %d connections, want 1", n)
		}
		got := c.expectType("message")
		if got.ID != id || string(got.Data) != `{"hello":"wörld"}` || got.TS != at.UnixMilli() {
			t.Fatalf("message frame %+v", got)
		}
		c.send(map[string]string{"type": "ack", "id": id})
		eventually(t, 5*time.Second, "ack", func() bool {
			_, _, acks := e.rec.snapshot()
			return slices.Equal(acks, []string{"alice/" + id})
		})
		// Application-level ping for clients that cannot see WebSocket pings.
		c.send(map[string]string{"type": "ping"})
		c.expectType("pong")
		// Unknown types are ignored, so newer clients work with this server.
		c.send(map[string]string{"type": "future-thing"})
		c.send(map[string]string{"type": "ping"})
		c.expectType("pong")
		online, _, _ := e.rec.snapshot()
		if !slices.Equal(online, []string{"alice"}) {
			t.Fatalf("online events %v", online)
		}
		c.c.Close(websocket.StatusNormalClosure, "bye")
		eventually(t, 5*time.Second, "offline event", func() bool {
			_, offline, _ := e.rec.snapshot()
			return slices.Equal(offline, []string{"alice"}) && e.srv.Connections() == 0
		})
	})
}

func TestMultiDeviceAndIsolation(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		tab1 := dialWS(t, e, "alice", "")
		tab2 := dialWS(t, e, "alice", "")
		bob := dialWS(t, e, "bob", "")
		for _, c := range []*wsClient{tab1, tab2, bob} {
			c.expectType("ready")
		}
		ids := storage.NewIDGenerator(nil)
		forAlice, at := ids.Next()
		if n := e.srv.Deliver(EncodeMessage(forAlice, json.RawMessage(`1`), at, ""), "alice"); n != 2 {
			t.Fatalf("delivered to %d connections, want 2", n)
		}
		forBob, at2 := ids.Next()
		e.srv.Deliver(EncodeMessage(forBob, json.RawMessage(`2`), at2, ""), "bob", "nobody")
		for _, c := range []*wsClient{tab1, tab2} {
			if f := c.expectType("message"); f.ID != forAlice {
				t.Fatalf("alice got %s", f.ID)
			}
		}
		if f := bob.expectType("message"); f.ID != forBob {
			t.Fatalf("bob got %s, want only his own %s", f.ID, forBob)
		}
		online, _, _ := e.rec.snapshot()
		slices.Sort(online)
		if !slices.Equal(online, []string{"alice", "bob"}) {
			t.Fatalf("online events %v: one per user, not per connection", online)
		}
		tab1.c.Close(websocket.StatusNormalClosure, "")
		eventually(t, 5*time.Second, "tab1 gone", func() bool { return e.srv.Connections() == 2 })
		if _, offline, _ := e.rec.snapshot(); len(offline) != 0 {
			t.Fatalf("offline %v while alice still has a tab open", offline)
		}
		if !e.srv.Online("alice") {
			t.Fatal("alice not online with one tab left")
		}
	})
}

func TestBroadcastReachesEveryone(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		var clients []*wsClient
		for i := range 50 {
			c := dialWS(t, e, fmt.Sprintf("user-%d", i%20), "")
			c.expectType("ready")
			clients = append(clients, c)
		}
		id, at := storage.NewIDGenerator(nil).Next()
		if n := e.srv.Broadcast(EncodeMessage(id, json.RawMessage(`"all"`), at, "")); n != 50 {
			t.Fatalf("broadcast reached %d connections, want 50", n)
		}
		for _, c := range clients {
			if f := c.expectType("message"); f.ID != id || string(f.Data) != `"all"` {
				t.Fatalf("got %+v", f)
			}
		}
	})
}

func TestTokenChannels(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	// Subprotocol: the edge selects herald.v1 and never echoes the token.
	c, resp, err := websocket.Dial(ctxT(t, 5*time.Second), e.wsURL(""), &websocket.DialOptions{
		Subprotocols: []string{Subprotocol, "bearer.u:carol"},
	})
	if err != nil {
		t.Fatalf("dial with subprotocol token: %v", err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != Subprotocol {
		t.Fatalf("selected subprotocol %q", got)
	}
	w := &wsClient{t: t, c: c}
	if f := w.expectType("ready"); f.User != "carol" {
		t.Fatalf("ready %+v", f)
	}
	c.CloseNow()
	// Query parameter, for browsers.
	c2, _, err := websocket.Dial(ctxT(t, 5*time.Second), e.wsURL("token=u:dave"), nil)
	if err != nil {
		t.Fatalf("dial with ?token=: %v", err)
	}
	if f := (&wsClient{t: t, c: c2}).expectType("ready"); f.User != "dave" {
		t.Fatalf("ready %+v", f)
	}
	c2.CloseNow()
}

func TestHandshakeRejections(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com", "https://*.trusted.org"}
	})
	tooMany := upgradeHeader("u:alice")
	for i := range 70 {
		tooMany.Set(fmt.Sprintf("X-Filler-%d", i), "x")
	}
	cases := []struct {
		name   string
		query  string
		header http.Header
		status int
		code   string
	}{
		{"no token", "", upgradeHeader(""), 401, "missing_token"},
		{"bad token", "", upgradeHeader("garbage"), 401, "unauthorized"},
		{"expired token", "", upgradeHeader("u:alice:1000"), 401, "token_expired"},
		{"auth down", "", upgradeHeader("down"), 503, "auth_unavailable"},
		{"user id invalid", "", upgradeHeader("u:*"), 401, "unauthorized"},
		{"not websocket", "", http.Header{"Authorization": {"Bearer u:alice"}}, 426, "upgrade_required"},
		{"bad since", "since=nope", upgradeHeader("u:alice"), 400, "bad_since"},
		{"since without store", "since=00000000000000000000", upgradeHeader("u:alice"), 400, "replay_unsupported"},
		{"too many headers", "", tooMany, 431, "too_many_headers"},
		{"foreign origin", "", withOrigin(upgradeHeader("u:alice"), "https://evil.example.com"), 403, "origin_not_allowed"},
		{"origin scheme differs", "", withOrigin(upgradeHeader("u:alice"), "http://app.example.com"), 403, "origin_not_allowed"},
		{"malformed origin", "", withOrigin(upgradeHeader("u:alice"), "::nope"), 403, "origin_not_allowed"},
	}
	for _, tc := range cases {
		status, body := httpDo(t, e, tc.query, tc.header)
		var got struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Errorf("%s: body %q is not the JSON error", tc.name, body)
			continue
		}
		if status != tc.status || got.Error.Code != tc.code || got.Error.Message == "" {
			t.Errorf("%s: %d %+v, want %d %s", tc.name, status, got.Error, tc.status, tc.code)
		}
	}
	if e.srv.Connections() != 0 {
		t.Fatalf("%d connections after rejected handshakes", e.srv.Connections())
	}
	// Allowed: no Origin, the server's own host, listed and wildcard origins.
	for _, origin := range []string{"", "http://" + e.addr, "https://app.example.com", "https://a.b.trusted.org"} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, _, err := websocket.Dial(ctxT(t, 5*time.Second), e.wsURL("token=u:o"), &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			t.Fatalf("origin %q rejected: %v", origin, err)
		}
		c.CloseNow()
	}
	// A header over MaxHeaderBytes is refused by the HTTP server itself.
	big := upgradeHeader("u:alice")
	big.Set("X-Big", strings.Repeat("a", 16<<10))
	if status, _ := httpDo(t, e, "", big); status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized header: status %d", status)
	}
}

func withOrigin(h http.Header, origin string) http.Header {
	h.Set("Origin", origin)
	return h
}

func TestAnyOriginAllowed(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, func(c *Config) { c.AllowedOrigins = []string{"*"} })
	c, _, err := websocket.Dial(ctxT(t, 5*time.Second), e.wsURL("token=u:o"), &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"https://anything.example"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.CloseNow()
}

func TestReplayThenLiveWithoutGapOrDuplicate(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		store := &fakeStore{gate: make(chan struct{})}
		e := startEdge(t, portable, func(c *Config) { c.Replayer = store; c.ReplayPage = 2 })
		ids := storage.NewIDGenerator(nil)
		var stored []string
		for i := range 5 {
			id, _ := ids.Next()
			stored = append(stored, id)
			store.msgs = append(store.msgs, msg(id, fmt.Sprint(i)))
		}
		other, _ := ids.Next()
		store.msgs = append(store.msgs, &storage.Message{ID: other, To: []string{"bob"}, Data: json.RawMessage(`0`)})
		for _, m := range store.msgs[:5] {
			m.To = []string{"alice"}
		}
		since := stored[1]

		type dialed struct {
			c   *websocket.Conn
			err error
		}
		done := make(chan dialed, 1)
		go func() {
			c, _, err := websocket.Dial(ctxT(t, 10*time.Second), e.wsURL("since="+since), &websocket.DialOptions{
				HTTPHeader: http.Header{"Authorization": {"Bearer u:alice"}},
			})
			done <- dialed{c, err}
		}()
		// While the replay waits on the store, live messages arrive: one the
		// replay will also return, and one that is new.
		eventually(t, 5*time.Second, "alice registered", func() bool { return e.srv.Online("alice") })
		dupID := stored[4]
		if n := e.srv.Deliver(EncodeMessage(dupID, json.RawMessage(`4`), time.Now(), ""), "alice"); n != 1 {
			t.Fatalf("live delivery during replay taken by %d connections", n)
		}
		live, at := ids.Next()
		e.srv.Deliver(EncodeMessage(live, json.RawMessage(`"live"`), at, ""), "alice")
		close(store.gate)
		d := <-done
		if d.err != nil {
			t.Fatal(d.err)
		}
		c := &wsClient{t: t, c: d.c}
		t.Cleanup(func() { d.c.CloseNow() })
		for _, want := range stored[2:] {
			f := c.expectType("message")
			if f.ID != want {
				t.Fatalf("replay out of order: got %s, want %s", f.ID, want)
			}
		}
		if r := c.expectType("ready"); r.Replayed != 3 {
			t.Fatalf("ready says %d replayed, want 3", r.Replayed)
		}
		if f := c.expectType("message"); f.ID != live {
			t.Fatalf("after replay got %s, want the live message %s (and no duplicate of %s)", f.ID, live, dupID)
		}
		// Dispatch may deliver a replayed message late, after the replay
		// ended: that copy is dropped, and a new message still arrives.
		late := stored[3]
		e.srv.Deliver(EncodeMessage(late, json.RawMessage(`3`), time.Now(), ""), "alice")
		fresh, at2 := ids.Next()
		e.srv.Deliver(EncodeMessage(fresh, json.RawMessage(`"fresh"`), at2, ""), "alice")
		if f := c.expectType("message"); f.ID != fresh {
			t.Fatalf("got %s, want %s (the late copy of %s must be dropped)", f.ID, fresh, late)
		}
	})
}

func TestReplayWindowIncludesRecentEarlierMessages(t *testing.T) {
	t.Parallel()
	store := &fakeStore{}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store; c.ReplayWindow = time.Minute })
	base := time.Now().Add(-time.Hour)
	clock := base
	ids := storage.NewIDGenerator(func() time.Time { return clock })
	old, _ := ids.Next() // an hour before since: outside the window
	clock = base.Add(59 * time.Minute)
	recent, _ := ids.Next() // 1 minute before... inside the window
	clock = base.Add(59*time.Minute + 30*time.Second)
	since, _ := ids.Next()
	clock = base.Add(time.Hour)
	after, _ := ids.Next()
	for _, id := range []string{old, recent, since, after} {
		m := msg(id, `0`)
		m.To = []string{"alice"}
		store.msgs = append(store.msgs, m)
	}
	c := dialWS(t, e, "alice", "since="+since)
	if f := c.expectType("message"); f.ID != recent {
		t.Fatalf("got %s, want %s from inside the window", f.ID, recent)
	}
	if f := c.expectType("message"); f.ID != after {
		t.Fatalf("got %s, want %s (since itself is skipped)", f.ID, after)
	}
	c.expectType("ready")
}

func TestReplayFailureClosesWithRetryCode(t *testing.T) {
	t.Parallel()
	store := &fakeStore{err: storage.ErrUnavailable}
	e := startEdge(t, false, func(c *Config) { c.Replayer = store; c.ReplayRetryFor = 300 * time.Millisecond })
	c := dialWS(t, e, "alice", "since="+storage.IDAt(time.Now()))
	c.expectClose(CloseReplayFailed)
	if !CloseReplayFailed.Reconnect() {
		t.Fatal("replay failure must tell clients to reconnect")
	}
}

func TestDrainSendsClientsElsewhere(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		var clients []*wsClient
		for i := range 20 {
			c := dialWS(t, e, fmt.Sprintf("u%d", i), "")
			c.expectType("ready")
			clients = append(clients, c)
		}
		spread := 3 * time.Second
		drained := make(chan error, 1)
		go func() {
			drained <- e.srv.Drain(ctxT(t, 10*time.Second), func(user string) string {
				return "ws://other/ws?for=" + user
			}, spread)
		}()
		for i, c := range clients {
			f := c.expectType("reconnect")
			if f.URL != fmt.Sprintf("ws://other/ws?for=u%d", i) || f.DelayMS < 0 || f.DelayMS >= spread.Milliseconds() {
				t.Fatalf("reconnect frame %+v", f)
			}
			c.expectClose(CloseRestart)
		}
		if err := <-drained; err != nil {
			t.Fatalf("drain: %v", err)
		}
		if e.srv.State() != StateDraining || e.srv.Connections() != 0 {
			t.Fatalf("after drain: %v with %d connections", e.srv.State(), e.srv.Connections())
		}
		status, body := httpDo(t, e, "", upgradeHeader("u:late"))
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
			t.Fatalf("handshake while draining: %d %s", status, body)
		}
	})
}

func TestShutdownClosesClients(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	c := dialWS(t, e, "alice", "")
	c.expectType("ready")
	go e.srv.Shutdown(ctxT(t, 5*time.Second))
	c.expectClose(CloseGoingAway)
}

func TestIdleClientClosedActiveClientKept(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, func(c *Config) {
			c.PingInterval = 50 * time.Millisecond
			c.IdleTimeout = 200 * time.Millisecond
		})
		// A client that answers pings stays, through many idle timeouts.
		active := dialRaw(t, e, "active", nil)
		// A client that never says anything is closed.
		silent := dialRaw(t, e, "silent", nil)
		pings := 0
		for pings < 20 { // 20 pings = 1 s = 5 idle timeouts
			op, p, err := active.readFrame(5 * time.Second)
			if err != nil {
				t.Fatalf("active client after %d pings: %v", pings, err)
			}
			switch op {
			case 0x9:
				pings++
				active.write(maskedFrame(true, 0, 0xA, p))
			case 0x8:
				t.Fatalf("active client closed: %q", p)
			}
		}
		silent.expectClose(CloseIdle)
		if !e.srv.Online("active") || e.srv.Online("silent") {
			t.Fatal("wrong client closed")
		}
	})
}

func TestTokenExpiryClosesConnection(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	exp := time.Now().Add(1500 * time.Millisecond).Unix()
	c, _, err := websocket.Dial(ctxT(t, 5*time.Second), e.wsURL(fmt.Sprintf("token=u:eve:%d", exp)), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &wsClient{t: t, c: c}
	w.expectType("ready")
	w.expectClose(CloseTokenExpired)
}

func TestSlowConsumerClosedOthersUnaffected(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, func(c *Config) {
			c.WriteQueueBytes = 64 << 10
			c.CloseTimeout = 10 * time.Second
		})
		slow := dialRaw(t, e, "slow", nil) // does not read for now
		fast := dialWS(t, e, "fast", "")
		fast.expectType("ready")
		ids := storage.NewIDGenerator(nil)
		payload := json.RawMessage(`"` + strings.Repeat("x", 4000) + `"`)
		sent := 0
		for testutil.ToFloat64(e.srv.metrics.slowConsumers) == 0 {
			if sent > 100000 {
				t.Fatal("400 MB queued without the slow consumer being closed")
			}
			id, at := ids.Next()
			f := EncodeMessage(id, payload, at, "")
			e.srv.Deliver(f, "slow")
			sent++
			if sent%100 == 0 { // the fast client keeps getting its messages
				e.srv.Deliver(f, "fast")
				if got := fast.expectType("message"); got.ID != id {
					t.Fatalf("fast client got %s, want %s", got.ID, id)
				}
			}
		}
		// Once the slow client reads, it finds whole message frames (a frame
		// partly written when it overflowed is finished), then the close.
		messages := 0
		for {
			op, p := slow.next()
			if op == 0x1 {
				var f frame
				if err := json.Unmarshal(p, &f); err != nil || (f.Type != "message" && f.Type != "ready") {
					t.Fatalf("corrupt frame after overflow: %q %v", p, err)
				}
				messages++
				continue
			}
			if op != 0x8 || CloseCode(uint16(p[0])<<8|uint16(p[1])) != CloseSlowConsumer {
				t.Fatalf("got opcode %v %q, want close 4008", op, p)
			}
			break
		}
		if messages == 0 || messages >= sent {
			t.Fatalf("slow client read %d of %d messages before the close", messages, sent)
		}
		slow.expectEOF()
		slow.nc.Close()
		eventually(t, 10*time.Second, "slow consumer gone", func() bool { return !e.srv.Online("slow") })
	})
}

func TestManyConnectionsConcurrently(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	const n = 300
	var wg sync.WaitGroup
	clients := make([]*wsClient, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(ctxT(t, 10*time.Second), e.wsURL(fmt.Sprintf("token=u:m%d", i)), nil)
			if err != nil {
				t.Error(err)
				return
			}
			clients[i] = &wsClient{t: t, c: c}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.c.CloseNow()
		}
	})
	eventually(t, 5*time.Second, "all registered", func() bool { return e.srv.Connections() == n })
	ids := storage.NewIDGenerator(nil)
	id, at := ids.Next()
	e.srv.Broadcast(EncodeMessage(id, json.RawMessage(`1`), at, ""))
	for i, c := range clients {
		c.expectType("ready")
		uid, at := ids.Next()
		e.srv.Deliver(EncodeMessage(uid, json.RawMessage(`2`), at, ""), fmt.Sprintf("m%d", i))
		if f := c.expectType("message"); f.ID != id {
			t.Fatalf("client %d: got %s, want broadcast %s", i, f.ID, id)
		}
		if f := c.expectType("message"); f.ID != uid {
			t.Fatalf("client %d: got %s, want unicast %s", i, f.ID, uid)
		}
	}
}
