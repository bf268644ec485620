package mongotest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// readyTimeout bounds how long Start waits for a server to answer a ping.
// FerretDB answers within milliseconds; the margin is for a loaded CI
// machine running tests with -race.
const readyTimeout = 20 * time.Second

// ferretMu serialises ferretdb.New, which writes a package-level variable
// of FerretDB's (version.Get().Package); parallel tests starting servers
// would otherwise race on it.
var ferretMu sync.Mutex

// Server is a MongoDB wire-protocol server for tests: an embedded FerretDB
// (from [Start] or [Shared]) or the external server named by
// HERALD_TEST_MONGO_URI (from [Shared]).
type Server struct {
	uri      string
	addr     string // host:port clients dial; stable across Stop and Start
	dir      string // FerretDB's SQLite directory
	t        testing.TB
	shared   bool
	external bool
	logs     *logTail
	logger   *slog.Logger

	mu      sync.Mutex
	running bool
	relay   *relay
	cancel  context.CancelFunc // stops FerretDB's Run
	done    chan struct{}      // closed when FerretDB's Run has returned
}

// Start starts an embedded FerretDB for t alone, on a free loopback port
// and an empty data directory under t.TempDir(), and returns once it
// answers. It is stopped in t.Cleanup; if t failed, FerretDB's log is
// written to t's log.
//
// When HERALD_TEST_MONGO_URI is set, Start skips t: the run targets an
// external server, which a test must not stop.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(uriEnv) != "" {
		t.Skipf("%s is set: tests that stop the server run against embedded FerretDB only", uriEnv)
	}
	logs := new(logTail)
	s, err := newServer(t.TempDir(), logs)
	if err != nil {
		t.Fatalf("mongotest: %v", err)
	}
	s.t = t
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("FerretDB log (%s):\n%s", s.addr, logs)
		}
	})
	return s
}

// newServer listens on a free loopback port, starts FerretDB on dir behind
// it and waits until it answers.
func newServer(dir string, logs *logTail) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		addr:   ln.Addr().String(),
		dir:    dir,
		logs:   logs,
		logger: newLogger(logs),
	}
	s.uri = (&url.URL{Scheme: "mongodb", Host: s.addr, Path: "/"}).String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(ln); err != nil {
		return nil, err
	}
	return s, nil
}

// URI returns the server's connection string, mongodb://127.0.0.1:PORT/
// for an embedded server. It does not change across Stop and Start.
func (s *Server) URI() string { return s.uri }

// Stop makes the server unreachable, like a killed mongod: the port refuses
// connections, open connections are reset, and FerretDB shuts down (its
// data stays on disk for Start). Stop waits until every goroutine of the
// server has ended. It is idempotent. Stopping the shared server panics:
// other tests use it.
func (s *Server) Stop() {
	s.mustOwn("Stop")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Start brings a stopped server back on the same port with the same data,
// and returns once it answers a ping. It does nothing if the server runs.
// It fails the test that started the server if FerretDB cannot start (for
// example if another process took the port meanwhile), so call it from
// that test's goroutine.
func (s *Server) Start() {
	s.mustOwn("Start")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return
	}
	ln, err := listenAgain(s.addr)
	if err == nil {
		err = s.startLocked(ln)
	}
	if err != nil {
		s.t.Fatalf("mongotest: restart on %s: %v", s.addr, err)
	}
}

func (s *Server) mustOwn(op string) {
	if s.shared || s.external {
		panic("mongotest: " + op + " on the shared server; use mongotest.Start for a server a test may stop")
	}
}

// listenAgain listens on addr, which the server used before. The port was
// released by Stop, so this normally succeeds at once; a short retry covers
// a kernel that is slow to release it.
func listenAgain(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	wait := time.Millisecond
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// startLocked starts FerretDB on its own free port, the relay from ln to it,
// and waits for a ping through ln. On error everything it started is
// stopped and ln is closed.
func (s *Server) startLocked(ln net.Listener) error {
	f, err := newFerretDB(s.dir, s.logger)
	if err != nil {
		_ = ln.Close()
		return err
	}
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		_ = ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx) // always nil; it returns when ctx is cancelled
	}()
	s.relay, s.cancel, s.done, s.running = newRelay(ln, u.Host), cancel, done, true
	if err := ping(s.uri, readyTimeout); err != nil {
		s.stopLocked()
		return fmt.Errorf("FerretDB on %s did not answer: %w", s.addr, err)
	}
	return nil
}

func newFerretDB(dir string, logger *slog.Logger) (*ferretdb.FerretDB, error) {
	// synchronous(normal) skips the fsync of each commit: a test server
	// needs durability across its own Stop and Start, not across a power
	// cut, and fsyncs would dominate the tests' time.
	sqliteURL := "file:" + filepath.ToSlash(dir) + "/?_pragma=synchronous(normal)"
	ferretMu.Lock()
	defer ferretMu.Unlock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("start FerretDB: %w", err)
	}
	return f, nil
}

func (s *Server) stopLocked() {
	if !s.running {
		return
	}
	s.relay.close() // clients see resets; FerretDB's connections see EOF
	s.cancel()
	<-s.done
	s.running = false
}

// ping connects to uri and pings it, polling until timeout.
func ping(uri string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(timeout).
		SetConnectTimeout(timeout))
	if err != nil {
		return err
	}
	defer func() { _ = c.Disconnect(context.Background()) }()
	wait := time.Millisecond
	for {
		err := c.Ping(ctx, nil)
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}
