package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
)

// MessagesFactory builds stores of one backend for [RunMessages].
type MessagesFactory struct {
	// New returns an empty store, isolated from every other store New
	// returned, and closes it in t.Cleanup. Required.
	New func(t testing.TB) storage.Messages
	// Reopen closes s and opens the same data again, as a restarted node
	// would. Nil if the backend cannot (then the persistence case is skipped).
	Reopen func(t testing.TB, s storage.Messages) storage.Messages
	// NewOnOwnServer returns an empty store on a server of its own and a
	// controller for that server. Nil for backends without a server.
	NewOnOwnServer func(t testing.TB) (storage.Messages, *Server)
}

// RunMessages runs the Messages contract against f.
func RunMessages(t *testing.T, f MessagesFactory) {
	t.Run("AppendGetRoundTrip", func(t *testing.T) { t.Parallel(); messagesRoundTrip(t, f) })
	t.Run("AppendValidates", func(t *testing.T) { t.Parallel(); messagesValidates(t, f) })
	t.Run("ReplayOrderedByID", func(t *testing.T) { t.Parallel(); messagesReplayOrdered(t, f) })
	t.Run("ReplayOnlyAddressed", func(t *testing.T) { t.Parallel(); messagesReplayAddressed(t, f) })
	t.Run("ReplayPagination", func(t *testing.T) { t.Parallel(); messagesReplayPagination(t, f) })
	t.Run("ReplayMaxBytes", func(t *testing.T) { t.Parallel(); messagesReplayMaxBytes(t, f) })
	t.Run("Resolve", func(t *testing.T) { t.Parallel(); messagesResolve(t, f) })
	t.Run("ReplayManyRecipients", func(t *testing.T) { t.Parallel(); messagesManyRecipients(t, f) })
	t.Run("Expiry", func(t *testing.T) { t.Parallel(); messagesExpiry(t, f) })
	t.Run("Idempotency", func(t *testing.T) { t.Parallel(); messagesIdempotency(t, f) })
	t.Run("IdempotencyConcurrent", func(t *testing.T) { t.Parallel(); messagesIdempotencyConcurrent(t, f) })
	t.Run("IdempotencyKeyFreedByExpiry", func(t *testing.T) { t.Parallel(); messagesKeyFreed(t, f) })
	t.Run("ClosedStore", func(t *testing.T) { t.Parallel(); messagesClosed(t, f) })
	t.Run("Persistence", func(t *testing.T) {
		if f.Reopen == nil {
			t.Skip("backend cannot reopen")
		}
		t.Parallel()
		messagesPersistence(t, f)
	})
	t.Run("ServerGone", func(t *testing.T) {
		if f.NewOnOwnServer == nil {
			t.Skip("backend has no server")
		}
		t.Parallel()
		messagesServerGone(t, f)
	})
}

// Gen makes messages for tests.
type Gen struct {
	ids *storage.IDGenerator
	n   int
	mu  sync.Mutex
}

// NewGen returns a message generator with its own ID generator.
func NewGen() *Gen { return &Gen{ids: storage.NewIDGenerator(nil)} }

// Msg returns a message to users (broadcast if none) that lives for ttl.
// Its data is a small JSON object naming its sequence number.
func (g *Gen) Msg(ttl time.Duration, users ...string) *storage.Message {
	id, at := g.ids.Next()
	g.mu.Lock()
	g.n++
	n := g.n
	g.mu.Unlock()
	return &storage.Message{
		ID:        id,
		To:        users,
		Broadcast: len(users) == 0,
		Data:      json.RawMessage(fmt.Sprintf(`{"n":%d, "text":"hello \u00e9\u4e16"}`, n)),
		CreatedAt: at,
		ExpiresAt: at.Add(ttl),
	}
}

// Expired returns a message to users that expired a second before now.
func (g *Gen) Expired(users ...string) *storage.Message {
	m := g.Msg(time.Hour, users...)
	m.ExpiresAt = time.Now().Add(-time.Second)
	if m.ExpiresAt.Before(m.CreatedAt) {
		m.CreatedAt = m.ExpiresAt
	}
	return m
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// MustAppend appends m and fails the test on error.
func MustAppend(t testing.TB, s storage.Messages, m *storage.Message) {
	t.Helper()
	got, err := s.Append(ctxT(t), m)
	if err != nil {
		t.Fatalf("append %s: %v", m.ID, err)
	}
	if got == nil || got.ID != m.ID {
		t.Fatalf("append %s returned %+v", m.ID, got)
	}
}

// ReplayAll pages through everything user can replay after after.
func ReplayAll(t testing.TB, s storage.Messages, user, after string, page int) []*storage.Message {
	t.Helper()
	var all []*storage.Message
	for {
		got, more, err := s.Replay(ctxT(t), storage.ReplayQuery{User: user, After: after, Limit: page})
		if err != nil {
			t.Fatalf("replay %s after %q: %v", user, after, err)
		}
		if len(got) > page {
			t.Fatalf("replay returned %d messages, limit %d", len(got), page)
		}
		if more != (len(got) == page) {
			t.Fatalf("replay returned %d messages of a page of %d with more=%v", len(got), page, more)
		}
		all = append(all, got...)
		if !more {
			return all
		}
		after = got[len(got)-1].ID
	}
}

func ids(ms []*storage.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func assertIDs(t testing.TB, what string, got []*storage.Message, want []string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("%s: got ids %v, want %v", what, g, want)
	}
}

func assertSame(t testing.TB, got, want *storage.Message) {
	t.Helper()
	if got.ID != want.ID || got.Broadcast != want.Broadcast || got.Key != want.Key ||
		string(got.Data) != string(want.Data) || !slices.Equal(got.To, want.To) ||
		!got.CreatedAt.Equal(want.CreatedAt.Truncate(time.Millisecond)) ||
		!got.ExpiresAt.Equal(want.ExpiresAt.Truncate(time.Millisecond)) {
		t.Fatalf("stored message differs:\n got %+v\nwant %+v (times to the millisecond)", got, want)
	}
}

func messagesRoundTrip(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	m := g.Msg(time.Hour, "alice", "bob")
	m.Data = json.RawMessage(`{"b":1,  "a":[true,null,"x\"y"],"u":"\u00e9"}`) // spacing and order kept verbatim
	m.Key = "order-1"
	MustAppend(t, s, m)
	got, err := s.Get(ctxT(t), m.ID)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	assertSame(t, got, m)
	b := g.Msg(time.Hour)
	MustAppend(t, s, b)
	got, err = s.Get(ctxT(t), b.ID)
	if err != nil {
		t.Fatalf("get broadcast: %v", err)
	}
	assertSame(t, got, b)
	// Appending a stored ID again (a retry after an unknown outcome) stores
	// nothing new and returns the stored message.
	retry := *m
	retry.Key = ""
	retry.Data = json.RawMessage(`{"changed":true}`)
	if got, err := s.Append(ctxT(t), &retry); err != nil || got == nil || string(got.Data) != string(m.Data) {
		t.Fatalf("re-append of a stored id = %+v, %v; want the stored message", got, err)
	}
	assertIDs(t, "alice after re-append", ReplayAll(t, s, "alice", "", 10), []string{m.ID, b.ID})
	if _, err := s.Get(ctxT(t), g.Msg(time.Hour, "x").ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get unknown id: %v, want ErrNotFound", err)
	}
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func messagesValidates(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	bad := map[string]func(m *storage.Message){
		"bad id":             func(m *storage.Message) { m.ID = "nope" },
		"no recipients":      func(m *storage.Message) { m.To = nil; m.Broadcast = false },
		"both":               func(m *storage.Message) { m.Broadcast = true },
		"reserved recipient": func(m *storage.Message) { m.To = []string{storage.BroadcastUser} },
		"empty recipient":    func(m *storage.Message) { m.To = []string{"a", ""} },
		"invalid json":       func(m *storage.Message) { m.Data = json.RawMessage(`{"a":`) },
	}
	for name, mutate := range bad {
		m := g.Msg(time.Hour, "alice")
		mutate(m)
		if _, err := s.Append(ctxT(t), m); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("%s: append = %v, want ErrInvalid", name, err)
		}
	}
	if got := ReplayAll(t, s, "alice", "", 10); len(got) != 0 {
		t.Fatalf("invalid messages were stored: %v", ids(got))
	}
	if _, _, err := s.Replay(ctxT(t), storage.ReplayQuery{User: "alice", After: "not-an-id", Limit: 10}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("replay with bad cursor = %v, want ErrInvalid", err)
	}
	if _, _, err := s.Replay(ctxT(t), storage.ReplayQuery{User: "alice"}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("replay with limit 0 = %v, want ErrInvalid", err)
	}
}

func messagesReplayOrdered(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	var ms []*storage.Message
	for i := 0; i < 30; i++ {
		ms = append(ms, g.Msg(time.Hour, "alice"))
	}
	want := ids(ms)
	// Collectors race: append in an order unrelated to the IDs.
	shuffled := slices.Clone(ms)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, m := range shuffled {
		MustAppend(t, s, m)
	}
	got := ReplayAll(t, s, "alice", "", 100)
	assertIDs(t, "replay from start", got, want)
	for i, m := range got {
		assertSame(t, m, ms[i])
	}
	assertIDs(t, "replay after the 10th", ReplayAll(t, s, "alice", want[9], 100), want[10:])
	assertIDs(t, "replay after the last", ReplayAll(t, s, "alice", want[29], 100), nil)
	// A cursor that is not a stored ID works too (a floor at some time).
	assertIDs(t, "replay after a floor", ReplayAll(t, s, "alice", storage.IDAt(ms[0].CreatedAt), 100), want)
}

func messagesReplayAddressed(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	a1 := g.Msg(time.Hour, "alice")
	b1 := g.Msg(time.Hour, "bob")
	ab := g.Msg(time.Hour, "bob", "alice")
	all := g.Msg(time.Hour)
	c1 := g.Msg(time.Hour, "carol")
	for _, m := range []*storage.Message{a1, b1, ab, all, c1} {
		MustAppend(t, s, m)
	}
	assertIDs(t, "alice", ReplayAll(t, s, "alice", "", 10), []string{a1.ID, ab.ID, all.ID})
	assertIDs(t, "bob", ReplayAll(t, s, "bob", "", 10), []string{b1.ID, ab.ID, all.ID})
	assertIDs(t, "carol", ReplayAll(t, s, "carol", "", 10), []string{all.ID, c1.ID})
	assertIDs(t, "stranger", ReplayAll(t, s, "dave", "", 10), []string{all.ID})
	// A user whose ID is a prefix of another's sees only its own.
	ali := g.Msg(time.Hour, "ali")
	MustAppend(t, s, ali)
	assertIDs(t, "prefix user", ReplayAll(t, s, "ali", "", 10), []string{all.ID, ali.ID})
	assertIDs(t, "alice after prefix user", ReplayAll(t, s, "alice", "", 10), []string{a1.ID, ab.ID, all.ID})
}

func messagesReplayPagination(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	var want []string
	for i := 0; i < 25; i++ {
		m := g.Msg(time.Hour, "alice")
		if i%5 == 0 {
			m = g.Msg(time.Hour) // broadcasts interleaved with direct messages
		}
		MustAppend(t, s, m)
		want = append(want, m.ID)
		MustAppend(t, s, g.Msg(time.Hour, "bob"))
	}
	for _, page := range []int{1, 3, 7, 25, 100} {
		assertIDs(t, fmt.Sprintf("page size %d", page), ReplayAll(t, s, "alice", "", page), want)
	}
	first, more, err := s.Replay(ctxT(t), storage.ReplayQuery{User: "alice", Limit: 10})
	if err != nil || !more {
		t.Fatalf("first page: more=%v, %v", more, err)
	}
	assertIDs(t, "first page", first, want[:10])
}

// Pages bounded by bytes: each stops once its data reaches MaxBytes, the
// first message always comes (even alone over the limit), and paging by
// bytes returns everything, in order.
func messagesReplayMaxBytes(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	var want []string
	for i := 0; i < 20; i++ {
		m := g.Msg(time.Hour, "alice")
		size := 100
		if i == 7 {
			size = 5000 // one message larger than a page
		}
		m.Data = json.RawMessage(fmt.Sprintf("%q", strings.Repeat("x", size-2)))
		MustAppend(t, s, m)
		want = append(want, m.ID)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 40 {
			t.Fatal("byte-bounded paging does not end")
		}
		page, more, err := s.Replay(ctxT(t), storage.ReplayQuery{User: "alice", After: after, Limit: 100, MaxBytes: 350})
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for i, m := range page {
			if i > 0 && size >= 350 {
				t.Fatalf("page went on after reaching MaxBytes: %d bytes before message %d", size, i)
			}
			size += len(m.Data)
			got = append(got, m.ID)
		}
		if len(page) > 0 {
			after = page[len(page)-1].ID
		}
		if !more {
			break
		}
		if len(page) == 0 {
			t.Fatal("an empty page says there is more")
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paging by bytes gave %v, want %v", got, want)
	}
}

// Resolve settles an append whose outcome was lost: a stored message is
// returned (and stays), an absent one is fenced for good (a late append
// of its ID stores nothing, whatever it carries), and asking again gives
// the same answers. Fences are invisible to Replay and Get.
func messagesResolve(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	stored := g.Msg(time.Hour, "alice")
	MustAppend(t, s, stored)
	lost := g.Msg(time.Hour, "alice")
	lost.Key = "lost-key"
	for range 2 {
		got, err := s.Resolve(ctxT(t), stored)
		if err != nil || got == nil || got.ID != stored.ID {
			t.Fatalf("resolve of a stored message = %+v, %v", got, err)
		}
		assertSame(t, got, stored)
		got, err = s.Resolve(ctxT(t), lost)
		if err != nil || got != nil {
			t.Fatalf("resolve of a message never stored = %+v, %v; want nil, nil", got, err)
		}
	}
	if _, err := s.Append(ctxT(t), lost); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("append of a fenced id = %v, want ErrFenced", err)
	}
	if _, err := s.Get(ctxT(t), lost.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get of a fenced id = %v, want ErrNotFound", err)
	}
	assertIDs(t, "alice", ReplayAll(t, s, "alice", "", 10), []string{stored.ID})
	// The fence does not hold the lost message's idempotency key: a retry
	// of that POST (a new ID, the same key) is stored.
	retry := g.Msg(time.Hour, "alice")
	retry.Key = "lost-key"
	MustAppend(t, s, retry)
	assertIDs(t, "alice after the retry", ReplayAll(t, s, "alice", "", 10), []string{stored.ID, retry.ID})
}

func messagesManyRecipients(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%04d", i)
	}
	m := g.Msg(time.Hour, users...)
	MustAppend(t, s, m)
	other := g.Msg(time.Hour, users[500])
	MustAppend(t, s, other)
	assertIDs(t, "user-0000", ReplayAll(t, s, "user-0000", "", 10), []string{m.ID})
	assertIDs(t, "user-0500", ReplayAll(t, s, "user-0500", "", 10), []string{m.ID, other.ID})
	assertIDs(t, "user-0999", ReplayAll(t, s, "user-0999", "", 10), []string{m.ID})
	assertIDs(t, "not a recipient", ReplayAll(t, s, "user-1000", "", 10), nil)
	got, err := s.Get(ctxT(t), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.To, users) {
		t.Fatalf("recipients not kept in order: %d of %d", len(got.To), len(users))
	}
	dups := g.Msg(time.Hour, "x", "y", "x") // duplicates in To deliver once
	MustAppend(t, s, dups)
	assertIDs(t, "duplicate recipient", ReplayAll(t, s, "x", "", 10), []string{dups.ID})
}

func messagesExpiry(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	live := g.Msg(time.Hour, "alice")
	dead := g.Expired("alice")
	deadAll := g.Expired()
	live2 := g.Msg(time.Hour, "alice")
	for _, m := range []*storage.Message{live, dead, deadAll, live2} {
		MustAppend(t, s, m)
	}
	assertIDs(t, "replay skips expired before sweep", ReplayAll(t, s, "alice", "", 10), []string{live.ID, live2.ID})
	if _, err := s.Get(ctxT(t), dead.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get expired: %v, want ErrNotFound", err)
	}
	n, err := s.DeleteExpired(ctxT(t), time.Now())
	if err != nil {
		t.Fatalf("delete expired: %v", err)
	}
	if n != 2 {
		t.Fatalf("deleted %d, want 2", n)
	}
	if n, err = s.DeleteExpired(ctxT(t), time.Now()); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v; want 0, nil", n, err)
	}
	assertIDs(t, "replay after sweep", ReplayAll(t, s, "alice", "", 10), []string{live.ID, live2.ID})
	// Sweeping at a later time removes what expires by then.
	n, err = s.DeleteExpired(ctxT(t), time.Now().Add(2*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("sweep in the future: %d, %v; want 2, nil", n, err)
	}
	if _, err := s.Get(ctxT(t), live.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get swept: %v, want ErrNotFound", err)
	}
}

func messagesIdempotency(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	first := g.Msg(time.Hour, "alice")
	first.Key = "k-1"
	MustAppend(t, s, first)
	again := g.Msg(time.Hour, "alice", "bob")
	again.Key = "k-1"
	got, err := s.Append(ctxT(t), again)
	if !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("append with used key = %v, want ErrDuplicate", err)
	}
	if got == nil || got.ID != first.ID {
		t.Fatalf("duplicate append returned %+v, want the first message %s", got, first.ID)
	}
	other := g.Msg(time.Hour, "alice")
	other.Key = "k-2"
	MustAppend(t, s, other)
	noKey1, noKey2 := g.Msg(time.Hour, "alice"), g.Msg(time.Hour, "alice")
	MustAppend(t, s, noKey1) // empty keys never collide
	MustAppend(t, s, noKey2)
	assertIDs(t, "alice", ReplayAll(t, s, "alice", "", 10), []string{first.ID, other.ID, noKey1.ID, noKey2.ID})
	assertIDs(t, "bob got nothing from the duplicate", ReplayAll(t, s, "bob", "", 10), nil)
}

func messagesIdempotencyConcurrent(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	const racers = 16
	for round := 0; round < 5; round++ {
		key := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		results := make([]string, racers)
		errs := make([]error, racers)
		for i := 0; i < racers; i++ {
			m := g.Msg(time.Hour, "alice")
			m.Key = key
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := s.Append(ctxT(t), m)
				errs[i] = err
				if got != nil {
					results[i] = got.ID
				}
			}()
		}
		wg.Wait()
		won := 0
		for i := range errs {
			switch {
			case errs[i] == nil:
				won++
			case !errors.Is(errs[i], storage.ErrDuplicate):
				t.Fatalf("round %d racer %d: %v", round, i, errs[i])
			}
			if results[i] != results[0] {
				t.Fatalf("round %d: racers saw different ids %s and %s", round, results[0], results[i])
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d appends succeeded, want exactly 1", round, won)
		}
	}
	if got := ReplayAll(t, s, "alice", "", 100); len(got) != 5 {
		t.Fatalf("stored %d messages for 5 keys", len(got))
	}
}

func messagesKeyFreed(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	old := g.Expired("alice")
	old.Key = "reused"
	MustAppend(t, s, old)
	// An expired message does not hold its key, swept or not.
	fresh := g.Msg(time.Hour, "alice")
	fresh.Key = "reused"
	MustAppend(t, s, fresh)
	if _, err := s.DeleteExpired(ctxT(t), time.Now()); err != nil {
		t.Fatal(err)
	}
	dup := g.Msg(time.Hour, "alice")
	dup.Key = "reused"
	if got, err := s.Append(ctxT(t), dup); !errors.Is(err, storage.ErrDuplicate) || got.ID != fresh.ID {
		t.Fatalf("after sweep the live key must still hold: %v, %+v", err, got)
	}
	assertIDs(t, "alice", ReplayAll(t, s, "alice", "", 10), []string{fresh.ID})
}

func messagesClosed(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	_ = s.Close() // idempotent; error allowed
	g := NewGen()
	if _, err := s.Append(ctxT(t), g.Msg(time.Hour, "a")); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("append after close = %v, want ErrClosed", err)
	}
	if _, _, err := s.Replay(ctxT(t), storage.ReplayQuery{User: "a", Limit: 10}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("replay after close = %v, want ErrClosed", err)
	}
}

func messagesPersistence(t *testing.T, f MessagesFactory) {
	s := f.New(t)
	g := NewGen()
	m1 := g.Msg(time.Hour, "alice")
	m1.Key = "persist"
	m2 := g.Msg(time.Hour)
	MustAppend(t, s, m1)
	MustAppend(t, s, m2)
	s = f.Reopen(t, s)
	assertIDs(t, "after reopen", ReplayAll(t, s, "alice", "", 10), []string{m1.ID, m2.ID})
	dup := g.Msg(time.Hour, "alice")
	dup.Key = "persist"
	if _, err := s.Append(ctxT(t), dup); !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("idempotency key lost on reopen: %v", err)
	}
	// A retry of the newest stored ID after a restart still stores nothing.
	retry := *m2
	retry.Data = json.RawMessage(`{"changed":true}`)
	if got, err := s.Append(ctxT(t), &retry); err != nil || got == nil || string(got.Data) != string(m2.Data) {
		t.Fatalf("retry of a stored ID after reopen = %+v, %v; want the stored message", got, err)
	}
}

func messagesServerGone(t *testing.T, f MessagesFactory) {
	s, srv := f.NewOnOwnServer(t)
	g := NewGen()
	before := g.Msg(time.Hour, "alice")
	MustAppend(t, s, before)
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := s.Append(ctx, g.Msg(time.Hour, "alice")); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("append with server gone = %v, want ErrUnavailable", err)
	}
	if _, _, err := s.Replay(ctx, storage.ReplayQuery{User: "alice", Limit: 10}); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("replay with server gone = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("ping with server gone = %v, want ErrUnavailable", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("calls did not fail fast: %v", time.Since(start))
	}
	// The store recovers by itself when a server is back.
	srv.Start()
	after := g.Msg(time.Hour, "alice")
	after.Key = "after-restart" // a retry whose first try did land reports ErrDuplicate
	Eventually(t, 30*time.Second, func() error {
		_, err := s.Append(ctxT(t), after)
		if errors.Is(err, storage.ErrDuplicate) {
			return nil
		}
		return err
	})
	got := ReplayAll(t, s, "alice", "", 10)
	if !slices.Contains(ids(got), after.ID) {
		t.Fatalf("message appended after recovery not replayed: %v", ids(got))
	}
}
