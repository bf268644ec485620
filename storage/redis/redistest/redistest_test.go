package redistest

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(Main(m)) }

func alive(pid int) bool {
	// Signal 0 checks existence; a reaped process is gone.
	return syscall.Kill(pid, 0) == nil
}

func TestStartStopStart(t *testing.T) {
	t.Parallel()
	var last int // registered first, so it runs after Start's cleanup
	t.Cleanup(func() {
		if last != 0 && alive(last) {
			t.Errorf("redis-server %d survived its test", last)
		}
	})
	s := Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.URL() != "redis://"+s.Addr() || s.External() {
		t.Fatalf("addr %q url %q external %v", s.Addr(), s.URL(), s.External())
	}
	pid, err := serverPID(s.Addr())
	if err != nil {
		t.Fatalf("server does not answer: %v", err)
	}
	s.Stop()
	s.Stop() // idempotent
	if alive(pid) {
		t.Fatalf("redis-server %d still running after Stop", pid)
	}
	if _, err := serverPID(s.Addr()); err == nil {
		t.Fatal("stopped server still answers")
	}
	s.Start()
	s.Start() // running: nothing to do
	pid2, err := serverPID(s.Addr())
	if err != nil || pid2 == pid {
		t.Fatalf("restarted server: pid %d (was %d), %v", pid2, pid, err)
	}
	last = pid2
}

func TestShared(t *testing.T) {
	if os.Getenv(EnvURL) != "" {
		t.Skip("shared server is external")
	}
	t.Parallel()
	a, b := Shared(t), Shared(t)
	if a.Addr() != b.Addr() || a.External() {
		t.Fatalf("two shared servers: %s, %s", a.Addr(), b.Addr())
	}
	if _, err := serverPID(a.Addr()); err != nil {
		t.Fatalf("shared server does not answer: %v", err)
	}
}

func TestSharedExternal(t *testing.T) {
	t.Setenv(EnvURL, "redis://redis.example:6390")
	s := Shared(t)
	if !s.External() || s.Addr() != "redis.example:6390" || s.URL() != "redis://redis.example:6390" {
		t.Fatalf("external server: %+v", s)
	}
}

func TestUniquePrefix(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		p := UniquePrefix()
		if seen[p] || !strings.HasPrefix(p, "htest:") || strings.ContainsAny(p, "{}*?[") {
			t.Fatalf("prefix %q", p)
		}
		seen[p] = true
	}
}
