package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/storage"
)

// replyErr stands for an error reply from the server.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

var _ goredis.Error = replyErr("")

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	b := &Bindings{}
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: &timeoutErr{}}
	for _, tc := range []struct {
		err         error
		unavailable bool
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{timeout, true},
		{io.EOF, true},
		{goredis.ErrPoolTimeout, true},
		{goredis.ErrClosed, true}, // a pool closed under us, not by Close
		{context.DeadlineExceeded, true},
		{fmt.Errorf("wrapped: %w", context.Canceled), true},
		{replyErr("LOADING Redis is loading the dataset in memory"), true},
		{replyErr("READONLY You can't write against a read only replica."), true},
		{replyErr("CLUSTERDOWN The cluster is down"), true},
		{replyErr("OOM command not allowed when used memory > 'maxmemory'."), true},
		{replyErr("NOAUTH Authentication required."), true},
		{replyErr("ERR max number of clients reached"), true},
		{replyErr("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{replyErr("ERR Error running script (call to f_x): @user_script:1: oops"), false},
	} {
		err := b.wrapErr(tc.err, "op %d", 1)
		if got := errors.Is(err, storage.ErrUnavailable); got != tc.unavailable {
			t.Errorf("%v: unavailable = %v, want %v", tc.err, got, tc.unavailable)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%v: original error lost in %v", tc.err, err)
		}
	}
	if b.wrapErr(nil, "x") != nil {
		t.Error("nil error wrapped")
	}
	invalid := fmt.Errorf("%w: bad", storage.ErrInvalid)
	if err := b.wrapErr(invalid, "x"); !errors.Is(err, storage.ErrInvalid) || errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("invalid mapped to %v", err)
	}
	b.closed.Store(true)
	if err := b.wrapErr(goredis.ErrClosed, "x"); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }

func TestKeyNames(t *testing.T) {
	t.Parallel()
	k := keys{prefix: "p:"}
	if got := k.binding("alice"); got != "p:b:{alice}" {
		t.Errorf("binding key %q", got)
	}
	if got := k.lease("node-1"); got != "p:lease:{node-1}" {
		t.Errorf("lease key %q", got)
	}
	if got := k.nodeSet(storage.Node{ID: "node-1", Incarnation: "42"}); got != "p:n:{node-1}:42" {
		t.Errorf("node set key %q", got)
	}
	// Node IDs with braces could otherwise make two (ID, incarnation)
	// pairs share a key: "a}:x" / "y" against "a" / "x}:y".
	seen := map[string]storage.Node{}
	for _, n := range []storage.Node{
		{ID: "a}:x", Incarnation: "y"}, {ID: "a", Incarnation: "x}:y"},
		{ID: "a%7D:x", Incarnation: "y"}, {ID: "{a", Incarnation: "1"}, {ID: "%7Ba", Incarnation: "1"},
	} {
		key := k.nodeSet(n)
		if other, dup := seen[key]; dup {
			t.Errorf("%v and %v share key %q", n, other, key)
		}
		seen[key] = n
		if lease := k.lease(n.ID); lease != "p:lease:{"+escapeTag(n.ID)+"}" {
			t.Errorf("lease key %q", lease)
		}
	}
}

func TestLeaseCache(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := newLeaseCache(time.Second)
	if _, ok := c.get("a", now); ok {
		t.Fatal("empty cache answered")
	}
	c.put("a", "1", now, time.Minute)
	if inc, ok := c.get("a", now.Add(999*time.Millisecond)); !ok || inc != "1" {
		t.Fatalf("get = %q, %v", inc, ok)
	}
	if _, ok := c.get("a", now.Add(time.Second)); ok {
		t.Fatal("entry outlived the cache TTL")
	}
	c.put("b", "1", now, 100*time.Millisecond)
	if _, ok := c.get("b", now.Add(100*time.Millisecond)); ok {
		t.Fatal("entry outlived the lease")
	}
	c.put("c", "1", now, 0)
	if _, ok := c.get("c", now); ok {
		t.Fatal("lease without TTL cached")
	}
	c.forget("a", "2")
	if _, ok := c.get("a", now); !ok {
		t.Fatal("forget of another incarnation dropped the entry")
	}
	c.forget("a", "1")
	if _, ok := c.get("a", now); ok {
		t.Fatal("forget kept the entry")
	}

	// Expired entries are swept as the map grows.
	for i := range 10 * minSweep {
		c.put(fmt.Sprint(i), "1", now.Add(time.Duration(i)*time.Second), time.Second)
	}
	if len(c.m) > 2*minSweep {
		t.Fatalf("%d entries kept, most of them expired", len(c.m))
	}

	off := newLeaseCache(0)
	off.put("a", "1", now, time.Minute)
	if _, ok := off.get("a", now); ok {
		t.Fatal("disabled cache answered")
	}
}
