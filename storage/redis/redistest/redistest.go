// Package redistest starts real redis-server processes for tests.
//
// Two kinds of server:
//
//   - [Start] gives a test a server of its own, on a free loopback port, that
//     the test may [Server.Stop] and [Server.Start] again (empty, on the same
//     port, as a restarted Redis without persistence comes back). It is
//     killed in t.Cleanup.
//
//   - [Shared] gives every test of the binary one common server, started on
//     first use. Tests isolate themselves by a unique key prefix
//     ([UniquePrefix]) and must not stop it.
//
// [StartCluster] and [StartSentinel] start a Redis Cluster or a master with
// a sentinel, for tests of a client's topology support; like Start, they
// are the test's own and are killed in t.Cleanup.
//
// The shared server outlives each test, so the binary's TestMain must run
// the tests through [Main], which stops it when they end:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Main(m)) }
//
// or, without goleak, os.Exit(redistest.Main(m).Run()). Shared fails the
// test if TestMain does not. On Linux the server is also killed when the
// test binary dies (a timeout, SIGKILL), by a parent-death signal, so no
// redis-server outlives its tests.
//
// If the environment variable HERALD_TEST_REDIS_URL (see [EnvURL]) is set,
// Shared returns that external server instead of starting one; redis-server
// then need not be installed. Keys left there expire with the TTLs the tests
// set. Start still needs redis-server, and skips the test when it is missing
// and the variable is set: cases that stop the server cannot run against an
// external one.
//
// Without either, redis-server must be on PATH: install it (Debian and
// Ubuntu: apt-get install redis-server) or run `make test`, which does.
//
// Servers run without snapshots (an empty --save) and with --appendonly no,
// so they keep nothing across a restart and write only to a temporary
// directory. Readiness is polled until the very process started answers,
// never slept for.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// EnvURL names the environment variable that points [Shared] at an external
// Redis, as redis://host:port.
const EnvURL = "HERALD_TEST_REDIS_URL"

const installHint = "redis-server is not on PATH. Install it " +
	"(Debian/Ubuntu: apt-get install redis-server), run `make test` (which installs it), " +
	"or set " + EnvURL + "=redis://host:port to use a running server"

// Server is a Redis server for tests.
type Server struct {
	t    testing.TB
	url  string
	addr string
	proc *process // nil for an external server
	own  bool     // Stop and Start are allowed
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL returns redis://host:port for the server.
func (s *Server) URL() string { return s.url }

// External reports whether the server came from [EnvURL].
func (s *Server) External() bool { return s.proc == nil }

// Stop kills the server process, as a crash would, and waits for it to
// exit. It is idempotent. Only a server from [Start] can be stopped.
func (s *Server) Stop() {
	s.t.Helper()
	if !s.own {
		s.t.Fatal("redistest: Stop on a shared or external server; use redistest.Start(t) for a server of your own")
	}
	s.proc.stop()
}

// FlushAll empties the server (FLUSHALL), as an operator's mistake or a
// restart without persistence would, while it keeps running. Only a
// server from [Start] can be flushed.
func (s *Server) FlushAll() error {
	s.t.Helper()
	if !s.own {
		s.t.Fatal("redistest: FlushAll on a shared or external server; use redistest.Start(t) for a server of your own")
	}
	c := goredis.NewClient(&goredis.Options{Addr: s.addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.FlushAll(ctx).Err()
}

// Start starts a new, empty redis-server on the same port and waits until
// it answers; it does nothing if the server is running. Only a server from
// [Start] can be restarted. Call it from the test's goroutine.
func (s *Server) Start() {
	s.t.Helper()
	if !s.own {
		s.t.Fatal("redistest: Start on a shared or external server; use redistest.Start(t) for a server of your own")
	}
	if err := s.proc.start(); err != nil {
		s.t.Fatalf("redistest: restart redis-server on %s: %v", s.addr, err)
	}
}

// Start starts a redis-server of the test's own on a free loopback port and
// kills it in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	p := startOwn(t, t.TempDir(), nil)
	return &Server{t: t, url: "redis://" + p.addr, addr: p.addr, proc: p, own: true}
}

// startOwn starts a redis-server process for t (see Start for what happens
// without one installed) and kills it in t.Cleanup.
func startOwn(t testing.TB, dir string, extra func(port int) ([]string, error)) *process {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(EnvURL) != "" {
			t.Skipf("redistest: redis-server is not installed and %s is set: "+
				"this test needs servers of its own", EnvURL)
		}
		t.Fatal("redistest: " + installHint)
	}
	p, err := startProcess(bin, dir, extra)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(p.stop)
	return p
}

var (
	mainRunning atomic.Bool
	shared      struct {
		once sync.Once
		proc *process
		dir  string
		err  error
	}
)

// Shared returns the server every test of the binary shares: the one
// [EnvURL] names, or else one redis-server started on first use and stopped
// by [Main] after the last test.
func Shared(t testing.TB) *Server {
	t.Helper()
	if raw := os.Getenv(EnvURL); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			t.Fatalf("redistest: %s is not a redis://host:port URL", EnvURL)
		}
		return &Server{t: t, url: raw, addr: u.Host}
	}
	if !mainRunning.Load() {
		t.Fatal("redistest: Shared needs the test binary's TestMain to run the tests through " +
			"redistest.Main (func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Main(m)) }), " +
			"which stops the shared server at the end")
	}
	shared.once.Do(func() {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			shared.err = errors.New(installHint)
			return
		}
		if shared.dir, shared.err = os.MkdirTemp("", "redistest-"); shared.err != nil {
			return
		}
		shared.proc, shared.err = startProcess(bin, shared.dir, nil)
	})
	if shared.err != nil {
		t.Fatalf("redistest: shared server: %v", shared.err)
	}
	p := shared.proc
	return &Server{t: t, url: "redis://" + p.addr, addr: p.addr, proc: p}
}

// M runs a test binary's tests and then stops the shared server.
type M struct{ m *testing.M }

// Main wraps m for TestMain; see the package documentation.
func Main(m *testing.M) *M { return &M{m: m} }

// Run runs the tests, stops the shared server if one was started, and
// returns the exit code for os.Exit.
func (m *M) Run() int {
	mainRunning.Store(true)
	defer func() {
		if shared.proc != nil {
			shared.proc.stop()
		}
		if shared.dir != "" {
			_ = os.RemoveAll(shared.dir)
		}
	}()
	return m.m.Run()
}

var prefixes struct {
	once sync.Once
	tag  string
	n    atomic.Uint64
}

// UniquePrefix returns a key prefix that no other call, in this process or
// another, returns: "htest:<random>:<n>:".
func UniquePrefix() string {
	prefixes.once.Do(func() {
		var b [6]byte
		_, _ = rand.Read(b[:]) // never fails on supported platforms
		prefixes.tag = hex.EncodeToString(b[:])
	})
	return fmt.Sprintf("htest:%s:%d:", prefixes.tag, prefixes.n.Add(1))
}
