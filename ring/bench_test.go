package ring

import (
	"fmt"
	"slices"
	"testing"
)

func benchSnapshot(b *testing.B, n int) (*Snapshot, []string) {
	b.Helper()
	return mustSnapshot(b, DefaultConfig(), nodeIDs(n)), userKeys(1024)
}

func BenchmarkOwner_100Members(b *testing.B) {
	s, keys := benchSnapshot(b, 100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, ok := s.Owner(keys[i&1023]); !ok {
			b.Fatal("no owner")
		}
	}
}

// BenchmarkOwner_100Members_Parallel is the dispatch path: many goroutines
// load the current snapshot and look up owners while nobody writes.
func BenchmarkOwner_100Members_Parallel(b *testing.B) {
	r, err := New(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Set(nodeIDs(100)); err != nil {
		b.Fatal(err)
	}
	keys := userKeys(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, ok := r.Snapshot().Owner(keys[i&1023]); !ok {
				b.Error("no owner")
				return
			}
		}
	})
}

func BenchmarkOwners3_100Members(b *testing.B) {
	s, keys := benchSnapshot(b, 100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if len(s.Owners(keys[i&1023], 3)) != 3 {
			b.Fatal("short")
		}
	}
}

// BenchmarkSet measures one membership change: every iteration swaps one
// member, so every Set builds a new snapshot (the cost is consistent.New,
// which re-sorts the circle after adding each member). The first Without
// of a snapshot costs the same.
func BenchmarkSet(b *testing.B) {
	for _, n := range []int{10, 100, 300} {
		for _, rf := range []int{20, DefaultConfig().ReplicationFactor} {
			b.Run(fmt.Sprintf("%dMembers/ReplicationFactor=%d", n, rf), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.ReplicationFactor = rf
				r, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				a := nodeIDs(n)
				c := slices.Clone(a)
				c[n/2] = "node-joined"
				sets := [2][]string{a, c}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if err := r.Set(sets[i&1]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkWithoutOwner_100Members is the drain-hint path: the owner of a
// user once member node-7 has left, asked per user of the draining node.
// Without is built on the first call and memoized after.
func BenchmarkWithoutOwner_100Members(b *testing.B) {
	s, keys := benchSnapshot(b, 100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w, err := s.Without("node-7")
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := w.Owner(keys[i&1023]); !ok {
			b.Fatal("no owner")
		}
	}
}
