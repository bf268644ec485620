package mongotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"
)

// uriEnv names the variable that points the tests at an external MongoDB.
const uriEnv = "HERALD_TEST_MONGO_URI"

// shared is the one server of the test binary. It is package state because
// a test binary's tests share it by definition; RunMain bounds its life.
var shared struct {
	mu      sync.Mutex
	running bool // RunMain is running the tests
	srv     *Server
	dir     string
	err     error // why the shared server could not start
}

var dbSeq atomic.Uint64

// RunMain runs m's tests, stops the shared server if a test started it, and
// then, if the tests passed, checks with goleak that no goroutine outlived
// them (ignoring [IgnoreGoroutines] and opts). It returns the exit code for
// os.Exit. A package that uses [Shared] calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(mongotest.RunMain(m)) }
//
// m may be anything that runs the tests, such as redistest.Main(m) in a
// package that uses both helpers.
func RunMain(m interface{ Run() int }, opts ...goleak.Option) int {
	shared.mu.Lock()
	shared.running = true
	shared.mu.Unlock()

	code := m.Run()

	shared.mu.Lock()
	srv, dir := shared.srv, shared.dir
	shared.running, shared.srv, shared.dir, shared.err = false, nil, "", nil
	shared.mu.Unlock()
	if srv != nil && !srv.external {
		srv.mu.Lock()
		srv.stopLocked()
		srv.mu.Unlock()
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	if code == 0 {
		if err := goleak.Find(append(IgnoreGoroutines(), opts...)...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// Shared returns the test binary's shared server, starting an embedded
// FerretDB on first use, or the external server named by
// HERALD_TEST_MONGO_URI. Tests sharing it must isolate their data, each in
// its own database ([Server.Database]), and must not stop it. It fails t
// unless TestMain runs the tests through [RunMain], which stops it.
func Shared(t testing.TB) *Server {
	t.Helper()
	if uri := os.Getenv(uriEnv); uri != "" {
		return &Server{uri: uri, shared: true, external: true}
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.running {
		t.Fatal("mongotest.Shared: TestMain must run the tests with mongotest.RunMain, which stops the shared server")
	}
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = startShared()
	}
	if shared.err != nil {
		t.Fatalf("mongotest: shared server: %v", shared.err)
	}
	srv := shared.srv
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("shared FerretDB log (%s), last lines:\n%s", srv.addr, srv.logs)
		}
	})
	return srv
}

func startShared() (*Server, error) {
	dir, err := os.MkdirTemp("", "herald-mongotest-")
	if err != nil {
		return nil, err
	}
	srv, err := newServer(dir, new(logTail))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	srv.shared = true
	shared.dir = dir
	return srv, nil
}

// Database returns a database name no other call returns, for t to keep its
// data apart from other tests on the same server. The name carries part of
// t's name so that a leftover database on an external server says where it
// came from. On an external server the database is dropped in t.Cleanup;
// an embedded server's data goes with its directory.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	var r [3]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails on supported platforms
	suffix := fmt.Sprintf("_%d_%s", dbSeq.Add(1), hex.EncodeToString(r[:]))
	name := "t_" + sanitize(t.Name(), 63-len("t_")-len(suffix)) + suffix
	if s.external {
		t.Cleanup(func() { s.drop(t, name) })
	}
	return name
}

// sanitize keeps the characters every server accepts in a database name
// (FerretDB: [a-zA-Z0-9_-]) and at most n bytes of them.
func sanitize(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '_'
	}, s)
	if len(s) > n {
		s = s[len(s)-n:] // the end of a subtest's name is the distinctive part
	}
	return s
}

func (s *Server) drop(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(s.uri).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Logf("mongotest: drop %s: %v", name, err)
		return
	}
	defer func() { _ = c.Disconnect(ctx) }()
	if err := c.Database(name).Drop(ctx); err != nil {
		t.Logf("mongotest: drop %s: %v", name, err)
	}
}

// IgnoreGoroutines returns the goleak options other packages need for
// goroutines that FerretDB or the mongo driver leave running after every
// Server is stopped and every client disconnected. With FerretDB v1.24.2
// and mongo-driver v2.10.0 there are none (RunMain checks it after this
// package's own tests, which stop and restart servers), so the list is
// empty; it exists so that callers need not change if an upgrade adds one.
func IgnoreGoroutines() []goleak.Option {
	return nil
}
