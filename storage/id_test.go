package storage

import (
	"errors"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestIDGeneratorOrderedAndUnique(t *testing.T) {
	t.Parallel()
	g := NewIDGenerator(nil)
	const workers, per = 8, 2000
	var mu sync.Mutex
	seen := make(map[string]bool, workers*per)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := ""
			for i := 0; i < per; i++ {
				id, _ := g.Next()
				if id <= prev {
					t.Errorf("id %s not after %s from the same goroutine", id, prev)
					return
				}
				prev = id
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != workers*per {
		t.Fatalf("got %d unique ids, want %d", len(seen), workers*per)
	}
}

func TestIDEncodesTimeAndSorts(t *testing.T) {
	t.Parallel()
	clock := time.UnixMilli(1_700_000_000_123)
	g := NewIDGenerator(func() time.Time { return clock })
	a, at := g.Next()
	b, _ := g.Next() // same millisecond: sequence increments
	clock = clock.Add(-time.Second)
	c, ct := g.Next() // clock went back: still increasing
	if !(a < b && b < c) {
		t.Fatalf("ids not increasing: %s %s %s", a, b, c)
	}
	if !at.Equal(time.UnixMilli(1_700_000_000_123)) || !ct.Equal(at) {
		t.Fatalf("times: %v %v", at, ct)
	}
	got, err := ParseID(a)
	if err != nil || !got.Equal(at) {
		t.Fatalf("ParseID(%s) = %v, %v; want %v", a, got, err, at)
	}
	if floor := IDAt(at); !(floor <= a) || !(IDAt(at.Add(time.Millisecond)) > c) {
		t.Fatalf("IDAt bounds wrong: %s %s %s", floor, a, c)
	}
	ids := []string{c, a, IDAt(at.Add(-time.Hour)), b}
	sort.Strings(ids)
	if ids[1] != a || ids[3] != c {
		t.Fatalf("string order is not time order: %v", ids)
	}
}

func TestIDSequenceOverflowBorrowsNextMillisecond(t *testing.T) {
	t.Parallel()
	clock := time.UnixMilli(5000)
	g := NewIDGenerator(func() time.Time { return clock })
	var last string
	var lastT time.Time
	for i := 0; i <= idSeqMax+1; i++ {
		last, lastT = g.Next()
	}
	if !lastT.Equal(time.UnixMilli(5001)) {
		t.Fatalf("after %d ids in one ms, time = %v, want 5001ms", idSeqMax+2, lastT.UnixMilli())
	}
	if _, err := ParseID(last); err != nil {
		t.Fatal(err)
	}
}

func TestParseIDRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "short", "0000000000000000000i", "00000000000000000000x", "ZZZZZZZZZZZZZZZZZZZZ", "zzzzzzzzzzzzzzzzzzzz"} {
		if _, err := ParseID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseID(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestValidateUser(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"alice", "user-42", "ünïcode", "a@b.c"} {
		if err := ValidateUser(u); err != nil {
			t.Errorf("ValidateUser(%q) = %v", u, err)
		}
	}
	long := make([]byte, MaxUserLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, u := range []string{"", "*", "a\nb", "\xff", string(long)} {
		if err := ValidateUser(u); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateUser(%q) = %v, want ErrInvalid", u, err)
		}
	}
}

func TestFloorBoundsEveryLaterID(t *testing.T) {
	t.Parallel()
	clock := time.UnixMilli(1_700_000_000_000)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	g := NewIDGenerator(now)
	step := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	for i := 0; i < 2000; i++ {
		f := g.Floor()
		id, _ := g.Next()
		if id < f {
			t.Fatalf("step %d: id %s below the floor %s given just before", i, id, f)
		}
		switch i % 7 {
		case 0:
			step(time.Millisecond)
		case 3:
			step(-3 * time.Millisecond) // the clock steps back
		}
	}
}

func TestPrevID(t *testing.T) {
	t.Parallel()
	g := NewIDGenerator(nil)
	for range 100 {
		id, _ := g.Next()
		p := PrevID(id)
		if _, err := ParseID(p); err != nil || p >= id {
			t.Fatalf("PrevID(%s) = %s: not a smaller ID (%v)", id, p, err)
		}
	}
	ms := time.UnixMilli(1_700_000_000_001)
	at := IDAt(ms)
	if got, want := PrevID(at), IDAt(ms.Add(-time.Millisecond))[:idTimeLen]+"zzzzzzzzzz"; got != want {
		t.Fatalf("PrevID(%s) = %s, want %s (the last ID of the millisecond before)", at, got, want)
	}
	if PrevID("00000000000000000000") != "" {
		t.Fatal("PrevID of the smallest ID should be empty")
	}
}
