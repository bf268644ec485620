// Package nodetest starts real Herald nodes for tests: real listeners on
// free loopback ports, real stores, real tokens, and a WebSocket client
// from another library (github.com/coder/websocket), so the server is never
// tested only by its own code.
package nodetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/embedded"
	"github.com/heraldpush/herald/storage/memory"
)

// Node is a started node and what a test needs to talk to it.
type Node struct {
	*node.Node
	t        testing.TB
	Secret   []byte // signs tokens
	APIKey   string
	DataDir  string
	Backend  Backend
	Mongo    *MongoTarget     // with External
	Redis    *RedisTarget     // with External
	Bindings storage.Bindings // the node's binding store (closed by Shutdown)
	stopped  atomic.Bool
}

// Restart options: the same secrets and data as n.
func (n *Node) Same() Options {
	return Options{Backend: n.Backend, DataDir: n.DataDir, Mongo: n.Mongo, Redis: n.Redis, Secret: n.Secret, APIKey: n.APIKey}
}

// Backend names where a test node keeps its data.
type Backend string

// The backends.
const (
	// Embedded: the Pebble message store in DataDir and in-memory bindings.
	Embedded Backend = "embedded"
	// External: MongoDB (the shared embedded FerretDB, or
	// HERALD_TEST_MONGO_URI) and Redis (the shared redis-server, or
	// HERALD_TEST_REDIS_URL). The test binary's TestMain must run through
	// mongotest.RunMain(redistest.Main(m)).
	External Backend = "external"
)

// Backends lists every backend, for tests that run against each.
var Backends = []Backend{Embedded, External}

// Options adjust a test node. Zero values keep the defaults.
type Options struct {
	// Backend defaults to Embedded.
	Backend Backend
	// DataDir holds the embedded store; a new temp dir if empty (set it to
	// restart a node on the same data).
	DataDir string
	// Mongo and Redis are the external targets; fresh ones (a new database,
	// a new key prefix on the shared servers) if nil. Pass a node's own to
	// restart it on the same data.
	Mongo *MongoTarget
	Redis *RedisTarget
	// Secret and APIKey; random if empty.
	Secret []byte
	APIKey string
	// Config, if set, edits the configuration before the node is built.
	Config func(*node.Config)
}

// Start starts a single node with every role, the embedded message store
// and in-memory bindings, on a free 127.0.0.1 port, with test timings. It
// is shut down in t.Cleanup.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	tn := New(t, o)
	if err := tn.Node.Start(context.Background()); err != nil {
		_ = tn.Node.Shutdown(context.Background())
		t.Fatal(err)
	}
	return tn
}

// New is Start without starting the node: a test calls Start (and, if it
// fails, Shutdown) itself. The node is shut down in t.Cleanup.
func New(t testing.TB, o Options) *Node {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.Secret == nil {
		o.Secret = []byte(randomHex(32))
	}
	if o.APIKey == "" {
		o.APIKey = "key-" + randomHex(16)
	}
	verifier, err := auth.NewJWT(auth.JWTConfig{Secret: o.Secret})
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	var msgs storage.Messages
	switch o.Backend {
	case "", Embedded:
		o.Backend = Embedded
		m, err := embedded.Open(filepath.Join(o.DataDir, "messages"), embedded.Options{})
		if err != nil {
			t.Fatal(err)
		}
		msgs, cfg.Bindings = m, memory.NewBindings(nil)
	case External:
		if o.Mongo == nil {
			o.Mongo = SharedMongo(t)
		}
		if o.Redis == nil {
			o.Redis = SharedRedis(t)
		}
		msgs = o.Mongo.Open(t)
		cfg.Bindings = o.Redis.Open(t)
	default:
		t.Fatalf("unknown backend %q", o.Backend)
	}
	cfg.NodeID = "test-" + randomHex(3)
	cfg.Addr = "127.0.0.1:0"
	cfg.Auth = verifier
	cfg.APIKeys = []string{o.APIKey}
	cfg.Messages = msgs
	cfg.Edge.Tick = 10 * time.Millisecond
	cfg.Edge.PingInterval = time.Second
	cfg.Edge.IdleTimeout = 10 * time.Second
	cfg.Edge.CloseTimeout = time.Second
	cfg.LeaseTTL = 3 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	cfg.DrainSpread = 100 * time.Millisecond
	// Test gossip probes are fast (FastGossip), so a node starved of CPU
	// under -race is declared dead now and then; it refutes within this.
	cfg.DepartGrace = 2 * time.Second
	// A cluster of one, unless the test makes it more.
	cfg.ClusterSecret = []byte(randomHex(32))
	cfg.RPCAddr = "127.0.0.1:0"
	cfg.Gossip.BindAddr, cfg.Gossip.BindPort = "127.0.0.1", 0
	FastGossip(&cfg)
	if os.Getenv("HERALD_TEST_LOG") != "" {
		w := testWriter{t: t, done: new(atomic.Bool)}
		t.Cleanup(func() { w.done.Store(true) }) // registered first: runs after the node's own cleanup
		cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		msgs.Close()
		cfg.Bindings.Close()
		t.Fatal(err)
	}
	tn := &Node{Node: n, t: t, Secret: o.Secret, APIKey: o.APIKey, DataDir: o.DataDir,
		Backend: o.Backend, Mongo: o.Mongo, Redis: o.Redis, Bindings: cfg.Bindings}
	t.Cleanup(tn.Stop)
	return tn
}

// Stop shuts the node down (idempotent); the test fails if that fails.
func (n *Node) Stop() {
	if !n.stopped.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		n.t.Errorf("shutdown %s: %v", n.ID(), err)
	}
}

// URL is the node's HTTP base URL.
func (n *Node) URL() string { return "http://" + n.Addr() }

// WSURL is the node's WebSocket URL with a query.
func (n *Node) WSURL(query string) string {
	u := "ws://" + n.Addr() + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// Token mints a one-hour token for user.
func (n *Node) Token(user string) string {
	tok, err := auth.Mint(n.Secret, user, time.Hour)
	if err != nil {
		n.t.Fatal(err)
	}
	return tok
}

// Response is a decoded API answer.
type Response struct {
	Status    int    `json:"-"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Error     struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Body string
}

// Post sends body (marshalled unless it is a string or []byte) to
// POST /v1/messages with the node's API key.
func (n *Node) Post(body any) Response {
	n.t.Helper()
	return n.PostWith("Bearer "+n.APIKey, body)
}

// PostWith is Post with an explicit Authorization header ("" for none).
func (n *Node) PostWith(authz string, body any) Response {
	n.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			n.t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, n.URL()+"/v1/messages", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return n.do(req)
}

// Get performs a GET on path.
func (n *Node) Get(path string) Response {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.URL()+path, nil)
	return n.do(req)
}

func (n *Node) do(req *http.Request) Response {
	n.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := Response{Status: resp.StatusCode, Body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r); err != nil {
			n.t.Fatalf("%s %s: body %q is not JSON: %v", req.Method, req.URL.Path, b, err)
		}
	}
	return r
}

// Send posts a message to users with data and returns its ID, failing the
// test unless it is accepted.
func (n *Node) Send(data any, users ...string) string {
	n.t.Helper()
	r := n.Post(map[string]any{"to": users, "data": data})
	if r.Status != http.StatusAccepted || r.ID == "" {
		n.t.Fatalf("post to %v: %d %s", users, r.Status, r.Body)
	}
	return r.ID
}

// Client is a WebSocket client of a test node.
type Client struct {
	t    testing.TB
	User string
	Conn *websocket.Conn
}

// Frame is a server frame.
type Frame struct {
	Type     string          `json:"type"`
	ID       string          `json:"id"`
	Data     json.RawMessage `json:"data"`
	TS       int64           `json:"ts"`
	User     string          `json:"user"`
	Node     string          `json:"node"`
	Replayed int             `json:"replayed"`
	URL      string          `json:"url"`
	DelayMS  int64           `json:"delay_ms"`
	Cursor   string          `json:"cursor"`
}

// Dial connects as user with the given query (e.g. "since=...") and waits
// for nothing; see Ready.
func (n *Node) Dial(user, query string) *Client {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, n.WSURL(query), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + n.Token(user)}},
	})
	if err != nil {
		n.t.Fatalf("dial %s as %s: %v (%v)", n.Addr(), user, err, resp)
	}
	c.SetReadLimit(8 << 20)
	n.t.Cleanup(func() { c.CloseNow() })
	return &Client{t: n.t, User: user, Conn: c}
}

// Connect dials and waits for the ready frame, collecting replayed
// messages before it.
func (n *Node) Connect(user, query string) (*Client, []Frame) {
	n.t.Helper()
	c := n.Dial(user, query)
	var replayed []Frame
	for {
		f := c.Read()
		switch f.Type {
		case "ready":
			if f.Replayed != len(replayed) {
				n.t.Fatalf("ready says %d replayed, got %d", f.Replayed, len(replayed))
			}
			return c, replayed
		case "message":
			replayed = append(replayed, f)
		default:
			n.t.Fatalf("unexpected frame before ready: %+v", f)
		}
	}
}

// Read reads one frame or fails after 10 s.
func (c *Client) Read() Frame {
	c.t.Helper()
	f, err := c.TryRead(10 * time.Second)
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.User, err)
	}
	return f
}

// TryRead reads one frame within d.
func (c *Client) TryRead(d time.Duration) (Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, p, err := c.Conn.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	if typ != websocket.MessageText {
		return Frame{}, fmt.Errorf("%v frame", typ)
	}
	var f Frame
	if err := json.Unmarshal(p, &f); err != nil {
		return Frame{}, fmt.Errorf("frame %q: %w", p, err)
	}
	return f, nil
}

// Message reads the next frame, which must be a message, and acks it.
func (c *Client) Message() Frame {
	c.t.Helper()
	f := c.Read()
	if f.Type != "message" {
		c.t.Fatalf("%s: got %+v, want a message", c.User, f)
	}
	c.Send(map[string]string{"type": "ack", "id": f.ID})
	return f
}

// Send writes a JSON frame.
func (c *Client) Send(v any) {
	c.t.Helper()
	p, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Conn.Write(ctx, websocket.MessageText, p); err != nil {
		c.t.Fatalf("%s: write: %v", c.User, err)
	}
}

// Sync proves every frame sent before it was read: it pings and reads
// until the pong, returning the messages in between.
func (c *Client) Sync() []Frame {
	c.t.Helper()
	c.Send(map[string]string{"type": "ping"})
	var got []Frame
	for {
		f := c.Read()
		if f.Type == "pong" {
			return got
		}
		got = append(got, f)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func decode(t testing.TB, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
}

// testWriter sends a node's log to its test's log (HERALD_TEST_LOG=1).
// memberlist's Shutdown does not wait for a probe in flight, which may
// still log after the test ended; t.Log would panic then, so such lines are
// dropped.
type testWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func (w testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
