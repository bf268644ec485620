package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// nodeIDs returns "node-1" ... "node-n": names that end in digits, the
// case the separator exists for.
func nodeIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i+1)
	}
	return ids
}

func userKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	return keys
}

func mustSnapshot(t testing.TB, cfg Config, ids []string) *Snapshot {
	t.Helper()
	s, err := NewSnapshot(cfg, ids)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEmptyRing(t *testing.T) {
	t.Parallel()
	r, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	check := func(s *Snapshot) {
		t.Helper()
		if s == nil {
			t.Fatal("nil snapshot")
		}
		if o, ok := s.Owner("user-1"); ok || o != "" {
			t.Fatalf("Owner on empty ring = %q, %v", o, ok)
		}
		if got := s.Owners("user-1", 3); got != nil {
			t.Fatalf("Owners on empty ring = %v", got)
		}
		if s.Len() != 0 || len(s.Members()) != 0 || s.Contains("node-1") {
			t.Fatalf("empty ring has members %v", s.Members())
		}
		if w, err := s.Without("node-1"); err != nil || w != s {
			t.Fatalf("Without on empty ring = %p, %v", w, err)
		}
	}
	check(r.Snapshot())
	if err := r.Set([]string{"node-1", "node-2"}); err != nil {
		t.Fatal(err)
	}
	for _, empty := range [][]string{nil, {}} {
		if err := r.Set(empty); err != nil {
			t.Fatal(err)
		}
		check(r.Snapshot())
	}
	// Removing the last member gives an empty ring too.
	one := mustSnapshot(t, DefaultConfig(), []string{"only"})
	w, err := one.Without("only")
	if err != nil {
		t.Fatal(err)
	}
	check(w)
}

func TestSetRejectsEmptyID(t *testing.T) {
	t.Parallel()
	r, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set([]string{"node-1"}); err != nil {
		t.Fatal(err)
	}
	before := r.Snapshot()
	if err := r.Set([]string{"node-2", ""}); !errors.Is(err, ErrEmptyMemberID) {
		t.Fatalf("Set with an empty ID = %v, want ErrEmptyMemberID", err)
	}
	if r.Snapshot() != before {
		t.Fatal("a failed Set replaced the snapshot")
	}
}

func TestSetSameMembersKeepsSnapshot(t *testing.T) {
	t.Parallel()
	r, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set([]string{"b", "a", "c"}); err != nil {
		t.Fatal(err)
	}
	s := r.Snapshot()
	if err := r.Set([]string{"c", "a", "b", "a"}); err != nil {
		t.Fatal(err)
	}
	if r.Snapshot() != s {
		t.Fatal("Set with the same member set rebuilt the snapshot")
	}
	if got := s.Members(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("Members = %v", got)
	}
}

// TestDeterministicAcrossOrder: two rings given the same members in
// different orders, with duplicates, agree on every key.
func TestDeterministicAcrossOrder(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	ids := nodeIDs(30)
	shuffled := slices.Clone(ids)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, ids[3], ids[17])

	r1, _ := New(cfg)
	r2, _ := New(cfg)
	if err := r1.Set(ids); err != nil {
		t.Fatal(err)
	}
	if err := r2.Set(shuffled); err != nil {
		t.Fatal(err)
	}
	s1, s2 := r1.Snapshot(), r2.Snapshot()
	if !slices.Equal(s1.Members(), s2.Members()) {
		t.Fatalf("members differ: %v vs %v", s1.Members(), s2.Members())
	}
	for _, k := range userKeys(20000) {
		o1, _ := s1.Owner(k)
		o2, _ := s2.Owner(k)
		if o1 != o2 {
			t.Fatalf("Owner(%q): %q vs %q", k, o1, o2)
		}
		if a, b := s1.Owners(k, 3), s2.Owners(k, 3); !slices.Equal(a, b) {
			t.Fatalf("Owners(%q): %v vs %v", k, a, b)
		}
	}
}

// TestRawConsistentIsOrderDependent shows why member names get a
// separator: without it, "node-1" and "node-11" share ring points and
// consistent's answer depends on the order members were added.
func TestRawConsistentIsOrderDependent(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	build := func(names []string) *consistent.Consistent {
		mems := make([]consistent.Member, len(names))
		for i, n := range names {
			mems[i] = member{name: n}
		}
		return consistent.New(mems, consistent.Config{Hasher: hasher{},
			PartitionCount: cfg.PartitionCount, ReplicationFactor: cfg.ReplicationFactor, Load: cfg.Load})
	}
	ids := nodeIDs(20)
	reversed := slices.Clone(ids)
	slices.Reverse(reversed)
	fwd, rev := build(ids), build(reversed)
	differ := 0
	for p := range cfg.PartitionCount {
		if fwd.GetPartitionOwner(p).String() != rev.GetPartitionOwner(p).String() {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("raw consistent agreed across orders; the separator may be unnecessary")
	}
	t.Logf("raw consistent: %d of %d partitions change owner when the same 20 members are added in reverse order", differ, cfg.PartitionCount)
}

// TestCircleMirrorsConsistent checks that the circle Owners walks is the
// one consistent placed partitions on: with a load bound too large to
// matter, every partition belongs to the member of the first point at or
// after the partition's hash.
func TestCircleMirrorsConsistent(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Load = 1e9
	s := mustSnapshot(t, cfg, nodeIDs(25))
	var pb [8]byte
	for p := range cfg.PartitionCount {
		binary.LittleEndian.PutUint64(pb[:], uint64(p))
		h := xxhash.Sum64(pb[:])
		i, _ := slices.BinarySearchFunc(s.points, h, func(pt point, h uint64) int { return cmp.Compare(pt.hash, h) })
		if got, want := s.points[i%len(s.points)].member, s.owners[p]; got != want {
			t.Fatalf("partition %d: circle says %s, consistent says %s", p, s.members[got], s.members[want])
		}
	}
	if len(s.points) != 25*cfg.ReplicationFactor {
		t.Fatalf("%d points, want %d", len(s.points), 25*cfg.ReplicationFactor)
	}
}

func TestCircleCollisionLaterMemberWins(t *testing.T) {
	t.Parallel()
	// circle resolves equal hashes the way consistent's map does; force the
	// case by hand since xxhash collisions can't be produced on demand.
	pts := []point{{5, 0}, {3, 1}, {5, 2}, {5, 1}}
	slices.SortStableFunc(pts, func(a, b point) int { return cmp.Compare(a.hash, b.hash) })
	for i := len(pts) - 2; i >= 0; i-- {
		if pts[i].hash == pts[i+1].hash {
			pts[i].member = pts[i+1].member
		}
	}
	if want := []point{{3, 1}, {5, 1}, {5, 1}, {5, 1}}; !slices.Equal(pts, want) {
		t.Fatalf("got %v, want %v", pts, want)
	}
}

func TestOwners(t *testing.T) {
	t.Parallel()
	ids := nodeIDs(40)
	s := mustSnapshot(t, DefaultConfig(), ids)
	for _, k := range userKeys(2000) {
		owner, _ := s.Owner(k)
		for _, n := range []int{1, 2, 3, 17, 40, 41, 1000} {
			got := s.Owners(k, n)
			if want := min(n, len(ids)); len(got) != want {
				t.Fatalf("Owners(%q, %d) has %d entries, want %d", k, n, len(got), want)
			}
			if got[0] != owner {
				t.Fatalf("Owners(%q, %d)[0] = %q, Owner = %q", k, n, got[0], owner)
			}
			sorted := slices.Sorted(slices.Values(got))
			if len(slices.Compact(sorted)) != len(got) {
				t.Fatalf("Owners(%q, %d) repeats: %v", k, n, got)
			}
			for _, o := range got {
				if !s.Contains(o) {
					t.Fatalf("Owners(%q, %d) has non-member %q", k, n, o)
				}
			}
			if !slices.Equal(got, s.Owners(k, len(ids))[:len(got)]) {
				t.Fatalf("Owners(%q, %d) is not a prefix of the full order", k, n)
			}
		}
	}
	for _, n := range []int{0, -1} {
		if got := s.Owners("user-1", n); got != nil {
			t.Fatalf("Owners(n=%d) = %v", n, got)
		}
	}
}

// TestWithoutEqualsRebuild: Without(id) is exactly the ring built from the
// other members.
func TestWithoutEqualsRebuild(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	ids := nodeIDs(12)
	s := mustSnapshot(t, cfg, ids)
	keys := userKeys(5000)
	for i, id := range ids {
		w, err := s.Without(id)
		if err != nil {
			t.Fatal(err)
		}
		rest := slices.Delete(slices.Clone(ids), i, i+1)
		want := mustSnapshot(t, cfg, rest)
		if !slices.Equal(w.Members(), want.Members()) || w.Contains(id) {
			t.Fatalf("Without(%s) members = %v", id, w.Members())
		}
		if !slices.Equal(w.owners, want.owners) {
			t.Fatalf("Without(%s) partition table differs from a rebuild", id)
		}
		for _, k := range keys {
			a, _ := w.Owner(k)
			b, _ := want.Owner(k)
			if a != b || a == id {
				t.Fatalf("Without(%s).Owner(%q) = %q, rebuild says %q", id, k, a, b)
			}
			if !slices.Equal(w.Owners(k, 3), want.Owners(k, 3)) {
				t.Fatalf("Without(%s).Owners(%q) differs from a rebuild", id, k)
			}
		}
		again, _ := s.Without(id)
		if again != w {
			t.Fatalf("Without(%s) was not memoized", id)
		}
	}
	if w, err := s.Without("not-a-member"); err != nil || w != s {
		t.Fatalf("Without(non-member) = %p, %v; want the snapshot itself", w, err)
	}
	// The original is untouched.
	if !slices.Equal(s.Members(), slices.Sorted(slices.Values(ids))) {
		t.Fatalf("Without changed the snapshot's members: %v", s.Members())
	}
}

// TestSnapshotImmutable: nothing a caller holds can change a snapshot.
func TestSnapshotImmutable(t *testing.T) {
	t.Parallel()
	r, _ := New(DefaultConfig())
	in := []string{"c", "a", "b"}
	if err := r.Set(in); err != nil {
		t.Fatal(err)
	}
	s := r.Snapshot()
	in[0] = "zzz"
	m := s.Members()
	m[0] = "yyy"
	if got := s.Members(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("Members = %v after callers changed their slices", got)
	}
	owners := s.Owners("user-1", 3)
	owners[0] = "xxx"
	if o, _ := s.Owner("user-1"); o == "xxx" || !s.Contains(o) {
		t.Fatalf("Owner = %q", o)
	}
	// A later Set publishes a new snapshot and leaves the old one alone.
	before := make(map[string]string)
	for _, k := range userKeys(1000) {
		before[k], _ = s.Owner(k)
	}
	if err := r.Set([]string{"d"}); err != nil {
		t.Fatal(err)
	}
	for k, o := range before {
		if got, _ := s.Owner(k); got != o {
			t.Fatalf("old snapshot changed: Owner(%q) %q -> %q", k, o, got)
		}
	}
}

// TestConcurrentReadersDuringSet is for -race: readers use snapshots
// while the single writer replaces the member set.
func TestConcurrentReadersDuringSet(t *testing.T) {
	t.Parallel()
	r, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	all := nodeIDs(12)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	keys := userKeys(200)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				s := r.Snapshot()
				k := keys[(i+g)%len(keys)]
				o, ok := s.Owner(k)
				if ok != (s.Len() > 0) || (ok && !s.Contains(o)) {
					errs <- fmt.Errorf("Owner(%q) = %q, %v on %v", k, o, ok, s.Members())
					return
				}
				if ok {
					if got := s.Owners(k, 2); got[0] != o {
						errs <- fmt.Errorf("Owners(%q)[0] = %q, Owner = %q", k, got[0], o)
						return
					}
					w, err := s.Without(o)
					if err != nil {
						errs <- err
						return
					}
					if w.Contains(o) || w.Len() != s.Len()-1 {
						errs <- fmt.Errorf("Without(%q) = %v", o, w.Members())
						return
					}
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 60 {
		n := rng.IntN(len(all) + 1)
		ids := slices.Clone(all)
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		if err := r.Set(ids[:n]); err != nil {
			t.Error(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
