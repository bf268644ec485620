package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/node/nodetest"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/mongo/mongotest"
	"github.com/heraldpush/herald/storage/redis/redistest"
)

// TestMain stops the shared redis-server and FerretDB after the tests,
// then checks that no goroutine outlived them.
func TestMain(m *testing.M) {
	os.Exit(mongotest.RunMain(redistest.Main(m)))
}

// eachBackend runs f against the embedded stores and against Redis and
// MongoDB (the MongoDB wire protocol of an embedded FerretDB).
func eachBackend(t *testing.T, f func(t *testing.T, o nodetest.Options)) {
	for _, b := range nodetest.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			f(t, nodetest.Options{Backend: b})
		})
	}
}

// expectOnly posts a sentinel to the client's user and checks that the
// messages before it are exactly want: dispatch keeps acceptance order, so
// anything sent earlier arrives before the sentinel.
func expectOnly(t *testing.T, n *nodetest.Node, c *nodetest.Client, want ...string) {
	t.Helper()
	sentinel := n.Send("sentinel", c.User)
	var got []string
	for {
		f := c.Message()
		if f.ID == sentinel {
			break
		}
		got = append(got, f.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s got %v, want %v", c.User, got, want)
	}
}

func TestPostReachesEveryDeviceOfEachRecipient(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		n := nodetest.Start(t, o)
		phone, _ := n.Connect("alice", "")
		laptop, _ := n.Connect("alice", "")
		bob, _ := n.Connect("bob", "")
		carol, _ := n.Connect("carol", "")

		r := n.Post(map[string]any{"to": []string{"alice", "bob"}, "data": map[string]any{"text": "héllo", "n": 1}})
		if r.Status != http.StatusAccepted || len(r.ID) != storage.IDLen {
			t.Fatalf("post: %d %s", r.Status, r.Body)
		}
		for _, c := range []*nodetest.Client{phone, laptop, bob} {
			f := c.Message()
			if f.ID != r.ID || string(f.Data) != `{"n":1,"text":"héllo"}` || f.TS <= 0 {
				t.Fatalf("%s got %+v", c.User, f)
			}
		}
		expectOnly(t, n, carol) // not a recipient: nothing
		expectOnly(t, n, phone) // one copy per device, no more
	})
}

func TestBroadcastReachesEveryone(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		n := nodetest.Start(t, o)
		var clients []*nodetest.Client
		for i := range 10 {
			c, _ := n.Connect(fmt.Sprintf("user-%d", i), "")
			clients = append(clients, c)
		}
		r := n.Post(`{"broadcast":true,"data":"to all"}`)
		if r.Status != http.StatusAccepted {
			t.Fatalf("broadcast: %d %s", r.Status, r.Body)
		}
		for _, c := range clients {
			if f := c.Message(); f.ID != r.ID || string(f.Data) != `"to all"` {
				t.Fatalf("%s got %+v", c.User, f)
			}
		}
		// A user who connects later replays the broadcast.
		_, replayed := n.Connect("late", "since="+storage.IDAt(time.Now().Add(-time.Hour)))
		if len(replayed) != 1 || replayed[0].ID != r.ID {
			t.Fatalf("late user replayed %+v", replayed)
		}
	})
}

// expectDistinct is expectOnly for a client that drops repeated IDs: the
// distinct IDs before the sentinel, in order of first arrival, are want.
func expectDistinct(t *testing.T, n *nodetest.Node, c *nodetest.Client, want ...string) {
	t.Helper()
	sentinel := n.Send("sentinel", c.User)
	var got []string
	for {
		f := c.Message()
		if f.ID == sentinel {
			break
		}
		if !slices.Contains(got, f.ID) {
			got = append(got, f.ID)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s got %v, want %v", c.User, got, want)
	}
}

// A key makes a retried POST one message: the retry answers the first
// one's ID, marked duplicate, stores nothing new, and delivers the first
// message again (under its ID: its first delivery may have been lost with
// the write whose outcome the caller never learnt); clients drop repeats.
func TestIdempotencyKeySendsOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		n := nodetest.Start(t, o)
		alice, _ := n.Connect("alice", "")
		body := map[string]any{"to": []string{"alice"}, "data": 1, "key": "order-42-shipped"}
		first := n.Post(body)
		body["data"] = 2 // a retry with other content still maps to the first
		second := n.Post(body)
		if first.Status != 202 || second.Status != 202 || first.ID != second.ID || first.Duplicate || !second.Duplicate {
			t.Fatalf("first %+v, second %+v", first, second)
		}
		// Concurrent retries: still one message.
		var wg sync.WaitGroup
		ids := make([]string, 8)
		body["key"] = "order-43"
		for i := range ids {
			wg.Add(1)
			go func() { defer wg.Done(); ids[i] = n.Post(body).ID }()
		}
		wg.Wait()
		for _, id := range ids {
			if id == "" || id != ids[0] {
				t.Fatalf("concurrent posts with one key got ids %v", ids)
			}
		}
		expectDistinct(t, n, alice, first.ID, ids[0])
		// A new connection replays one message per key.
		_, replayed := n.Connect("alice", "since="+storage.PrevID(first.ID)+"&seen=")
		if len(replayed) != 3 || replayed[0].ID != first.ID || replayed[1].ID != ids[0] {
			t.Fatalf("replay after the keyed posts: %+v", replayed)
		}
	})
}

func TestBadRequestsAreRejectedAndStoreNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		o.Config = func(c *node.Config) { c.MaxMessageBytes = 2048 }
		testBadRequests(t, nodetest.Start(t, o))
	})
}

func testBadRequests(t *testing.T, n *nodetest.Node) {
	alice, _ := n.Connect("alice", "")
	big := `"` + strings.Repeat("x", 3000) + `"`
	many := make([]string, storage.MaxRecipients+1)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}
	manyJSON, _ := json.Marshal(map[string]any{"to": many, "data": 1})
	cases := []struct {
		name   string
		authz  string
		body   string
		status int
		code   string
	}{
		{"no api key", "", `{"to":["alice"],"data":1}`, 401, "unauthorized"},
		{"wrong api key", "Bearer wrong-key-wrong-key", `{"to":["alice"],"data":1}`, 401, "unauthorized"},
		{"not json", "ok", `{"to":["alice"],`, 400, "bad_json"},
		{"empty body", "ok", ``, 400, "bad_json"},
		{"trailing garbage", "ok", `{"to":["alice"],"data":1} {}`, 400, "bad_json"},
		{"unknown field", "ok", `{"too":["alice"],"data":1}`, 400, "bad_json"},
		{"wrong type", "ok", `{"to":"alice","data":1}`, 400, "bad_json"},
		{"no recipients", "ok", `{"data":1}`, 400, "missing_recipients"},
		{"empty recipients", "ok", `{"to":[],"data":1}`, 400, "missing_recipients"},
		{"to and broadcast", "ok", `{"to":["alice"],"broadcast":true,"data":1}`, 400, "bad_recipients"},
		{"empty user", "ok", `{"to":["alice",""],"data":1}`, 400, "bad_recipient"},
		{"reserved user", "ok", `{"to":["*"],"data":1}`, 400, "bad_recipient"},
		{"control char user", "ok", `{"to":["a\u0000b"],"data":1}`, 400, "bad_recipient"},
		{"too many recipients", "ok", string(manyJSON), 400, "too_many_recipients"},
		{"no data", "ok", `{"to":["alice"]}`, 400, "missing_data"},
		{"data too big", "ok", `{"to":["alice"],"data":` + big + `}`, 413, "message_too_large"},
		{"body too big", "ok", `{"to":["alice"],"data":"` + strings.Repeat("y", 2<<20) + `"}`, 413, "body_too_large"},
		{"bad ttl", "ok", `{"to":["alice"],"data":1,"ttl":"tomorrow"}`, 400, "bad_ttl"},
		{"ttl too long", "ok", `{"to":["alice"],"data":1,"ttl":"9000h"}`, 400, "bad_ttl"},
		{"ttl too short", "ok", `{"to":["alice"],"data":1,"ttl":"10ms"}`, 400, "bad_ttl"},
		{"key too long", "ok", `{"to":["alice"],"data":1,"key":"` + strings.Repeat("k", 300) + `"}`, 400, "bad_key"},
		{"invalid utf-8", "ok", "{\"to\":[\"alice\"],\"data\":\"\xff\"}", 400, "invalid_utf8"},
	}
	for _, tc := range cases {
		authz := tc.authz
		if authz == "ok" {
			authz = "Bearer " + n.APIKey
		}
		r := n.PostWith(authz, tc.body)
		if r.Status != tc.status || r.Error.Code != tc.code || r.Error.Message == "" {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
		}
	}
	// Wrong method, and multipart.
	if r := n.Get("/v1/messages"); r.Status != 405 || r.Error.Code != "method_not_allowed" {
		t.Errorf("GET /v1/messages: %d %s", r.Status, r.Body)
	}
	// Nothing was stored or delivered.
	expectOnly(t, n, alice)
	_, replayed := n.Connect("alice", "since="+storage.IDAt(time.Now().Add(-time.Hour)))
	if len(replayed) != 1 { // only the sentinel
		t.Fatalf("stored after bad requests: %+v", replayed)
	}
	// A message to a user who never connected is accepted and waits.
	id := n.Send("for later", "nobody-yet")
	_, replayed = n.Connect("nobody-yet", "since="+storage.IDAt(time.Now().Add(-time.Hour)))
	if len(replayed) != 1 || replayed[0].ID != id {
		t.Fatalf("unknown user replay: %+v", replayed)
	}
}

func TestTTLAndDefaultTTL(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		n := nodetest.Start(t, o)
		short := n.Post(`{"to":["dora"],"data":"short","ttl":"1s"}`)
		long := n.Post(`{"to":["dora"],"data":"long"}`)
		if short.Status != 202 || long.Status != 202 {
			t.Fatalf("%+v %+v", short, long)
		}
		since := "since=" + storage.IDAt(time.Now().Add(-time.Hour))
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, replayed := n.Connect("dora", since)
			c.Conn.CloseNow()
			var ids []string
			for _, f := range replayed {
				ids = append(ids, f.ID)
			}
			if slices.Equal(ids, []string{long.ID}) {
				return // the short one expired, the default-TTL one lives
			}
			if time.Now().After(deadline) {
				t.Fatalf("replay still %v", ids)
			}
			time.Sleep(100 * time.Millisecond) // polling for the clock to pass 1 s
		}
	})
}

func TestReplaySinceWhileMessagesFlow(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) {
		// Window 0: since is exact, so the test checks the seam precisely.
		o.Config = func(c *node.Config) { c.Edge.ReplayWindow = 0 }
		testReplayWhileFlowing(t, nodetest.Start(t, o))
	})
}

func testReplayWhileFlowing(t *testing.T, n *nodetest.Node) {
	const total = 300
	sent := make(chan string, total)
	go func() {
		defer close(sent)
		for i := range total {
			r := n.Post(map[string]any{"to": []string{"erin"}, "data": i})
			if r.Status != 202 {
				t.Errorf("post %d: %d", i, r.Status)
				return
			}
			sent <- r.ID
		}
	}()
	var all []string
	for id := range sent {
		all = append(all, id)
		if len(all) == total/3 {
			break
		}
	}
	since := all[len(all)-10] // the client saw up to here
	c := n.Dial("erin", "since="+since)
	for id := range sent {
		all = append(all, id)
	}
	if t.Failed() {
		return
	}
	slices.Sort(all)
	i := slices.Index(all, since)
	want := all[i+1:]
	var got []string
	seen := map[string]bool{}
	for len(got) < len(want) {
		f := c.Read()
		if f.Type != "message" {
			continue // ready, between replayed and live
		}
		if seen[f.ID] {
			t.Fatalf("duplicate %s", f.ID)
		}
		seen[f.ID] = true
		got = append(got, f.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d messages, want %d in order; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestRestartKeepsMessages(t *testing.T) {
	eachBackend(t, func(t *testing.T, o nodetest.Options) { testRestart(t, o) })
}

func testRestart(t *testing.T, o nodetest.Options) {
	n1 := nodetest.Start(t, o)
	var ids []string
	for i := range 5 {
		ids = append(ids, n1.Send(i, "frank"))
	}
	keyed := n1.Post(`{"to":["frank"],"data":"k","key":"restart-key"}`)
	n1.Stop()

	n2 := nodetest.Start(t, n1.Same())
	_, replayed := n2.Connect("frank", "since="+ids[1])
	var got []string
	for _, f := range replayed {
		got = append(got, f.ID)
	}
	want := append(ids[2:], keyed.ID)
	// The default replay window may repeat ids[0] (ids[1] is since itself).
	got = slices.DeleteFunc(got, func(id string) bool { return id == ids[0] })
	if !slices.Equal(got, want) {
		t.Fatalf("after restart replayed %v, want %v", got, want)
	}
	if r := n2.Post(`{"to":["frank"],"data":"k2","key":"restart-key"}`); !r.Duplicate || r.ID != keyed.ID {
		t.Fatalf("idempotency key forgotten across restart: %+v", r)
	}
}

func TestHealthReadyMetricsNodes(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t, nodetest.Options{})
	if r := n.Get("/healthz"); r.Status != 200 {
		t.Fatalf("healthz %d", r.Status)
	}
	if r := n.Get("/readyz"); r.Status != 200 {
		t.Fatalf("readyz %d %s", r.Status, r.Body)
	}
	c, _ := n.Connect("gina", "")
	n.Send("x", "gina")
	c.Message()
	r := n.Get("/metrics")
	for _, want := range []string{"herald_edge_connections 1", `herald_api_messages_total{result="accepted"} 1`, "herald_edge_acks_total", "go_goroutines"} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	r = n.Get("/v1/nodes")
	if r.Status != 200 || !strings.Contains(r.Body, `"roles":["auth","collect","dispatch","push"]`) || !strings.Contains(r.Body, `"connections":1`) {
		t.Fatalf("nodes: %s", r.Body)
	}
	if r := n.Get("/nope"); r.Status != 404 || r.Error.Code != "not_found" {
		t.Fatalf("unknown path: %d %s", r.Status, r.Body)
	}
	if r := n.Get("/herald.js"); r.Status != 200 || !strings.Contains(r.Body, "class Herald") {
		t.Fatalf("herald.js: %d", r.Status)
	}
	if r := n.Get("/"); r.Status != 200 || !strings.Contains(r.Body, "<title>Herald demo</title>") {
		t.Fatalf("demo page: %d", r.Status)
	}
}

func TestAuthFailuresBeforeUpgrade(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t, nodetest.Options{})
	for name, tok := range map[string]string{
		"garbage":      "garbage",
		"other secret": mustMint(t, []byte("some-other-secret-of-enough-len"), "alice", time.Hour),
		"expired":      mustMint(t, n.Secret, "alice", -time.Minute),
	} {
		req, _ := http.NewRequest("GET", n.URL()+"/ws", nil)
		for k, v := range map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
			"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": "Bearer " + tok} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 401 || body.Error.Code != "unauthorized" || body.Error.Message == "" {
			t.Errorf("%s token: %d %+v", name, resp.StatusCode, body)
		}
	}
}

func mustMint(t *testing.T, secret []byte, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint(secret, user, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
