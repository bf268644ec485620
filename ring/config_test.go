package ring

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/buraksezer/consistent"
)

func TestDefaultConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxMembers() < 1000 {
		t.Fatalf("default MaxMembers %d leaves too little headroom over 100 nodes", cfg.MaxMembers())
	}
}

func TestValidateRejects(t *testing.T) {
	t.Parallel()
	ok := DefaultConfig()
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	cases := map[string]Config{
		"zero value":               {},
		"partitions 0":             with(func(c *Config) { c.PartitionCount = 0 }),
		"partitions negative":      with(func(c *Config) { c.PartitionCount = -1 }),
		"partitions too many":      with(func(c *Config) { c.PartitionCount = MaxPartitionCount + 1 }),
		"replication 0":            with(func(c *Config) { c.ReplicationFactor = 0 }),
		"replication 1":            with(func(c *Config) { c.ReplicationFactor = 1 }),
		"replication negative":     with(func(c *Config) { c.ReplicationFactor = -5 }),
		"replication too many":     with(func(c *Config) { c.ReplicationFactor = MaxReplicationFactor + 1 }),
		"load 0":                   with(func(c *Config) { c.Load = 0 }),
		"load negative":            with(func(c *Config) { c.Load = -1.25 }),
		"load below 1":             with(func(c *Config) { c.Load = 0.99 }),
		"load exactly 1":           with(func(c *Config) { c.Load = 1 }),
		"load NaN":                 with(func(c *Config) { c.Load = math.NaN() }),
		"load +Inf":                with(func(c *Config) { c.Load = math.Inf(1) }),
		"load -Inf":                with(func(c *Config) { c.Load = math.Inf(-1) }),
		"everything wrong at once": {PartitionCount: -1, ReplicationFactor: 1, Load: 1},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			err := cfg.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate(%+v) = %v, want ErrInvalidConfig", cfg, err)
			}
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
			}
			if _, err := NewSnapshot(cfg, []string{"a"}); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewSnapshot(%+v) = %v, want ErrInvalidConfig", cfg, err)
			}
		})
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{PartitionCount: 1, ReplicationFactor: MinReplicationFactor, Load: math.Nextafter(1, 2)},
		{PartitionCount: MaxPartitionCount, ReplicationFactor: MaxReplicationFactor, Load: math.MaxFloat64},
	} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", cfg, err)
		}
	}
}

// consistentPanics reports whether consistent.New panics for m members.
func consistentPanics(cfg Config, m int) (panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	mems := make([]consistent.Member, m)
	for i := range mems {
		mems[i] = member{name: fmt.Sprintf("m%d%s", i, sep), index: int32(i)}
	}
	consistent.New(mems, consistent.Config{
		Hasher: hasher{}, PartitionCount: cfg.PartitionCount,
		ReplicationFactor: cfg.ReplicationFactor, Load: cfg.Load,
	})
	return false
}

// TestFitsMatchesConsistent checks the up-front condition against
// consistent itself, including loads Validate rejects, where whether the
// partitions fit depends on the member count in a less obvious way.
func TestFitsMatchesConsistent(t *testing.T) {
	t.Parallel()
	loads := []float64{0.5, 0.9, 1, math.Nextafter(1, 2), 1.01, 1.25, 2, 1e300}
	for p := 1; p <= 30; p++ {
		for m := 1; m <= p+2; m++ {
			for _, load := range loads {
				for _, rf := range []int{2, 3} {
					cfg := Config{PartitionCount: p, ReplicationFactor: rf, Load: load}
					if got, want := cfg.fits(m), !consistentPanics(cfg, m); got != want {
						t.Fatalf("P=%d R=%d Load=%v members=%d: fits=%v, consistent fits=%v", p, rf, load, m, got, want)
					}
					if cfg.Validate() == nil && cfg.fits(m) != (m <= cfg.MaxMembers()) {
						t.Fatalf("P=%d Load=%v members=%d: fits=%v but MaxMembers=%d", p, load, m, cfg.fits(m), cfg.MaxMembers())
					}
				}
			}
		}
	}
}

// TestConsistentPanicsWeGuard pins the consistent behaviours that Validate
// and build guard against, so an upgrade that changes them is noticed.
func TestConsistentPanicsWeGuard(t *testing.T) {
	t.Parallel()
	// One point per member: the placement walk looks at all points but the
	// one before the start, so one member with one point never gets a
	// partition although its capacity is fine.
	if !consistentPanics(Config{PartitionCount: 1, ReplicationFactor: 1, Load: 1.25}, 1) {
		t.Error("consistent no longer panics with ReplicationFactor 1; MinReplicationFactor may be relaxed")
	}
	// More members than partitions: capacity ceil(0 × Load) = 0.
	if !consistentPanics(Config{PartitionCount: 3, ReplicationFactor: 20, Load: 1e9}, 4) {
		t.Error("consistent no longer panics with more members than partitions")
	}
	// An empty, non-nil member list.
	if !consistentPanics(Config{PartitionCount: 3, ReplicationFactor: 20, Load: 1.25}, 0) {
		t.Error("consistent no longer panics on an empty member list")
	}
	// Load 1 with a member count that doesn't divide the partition count.
	if !consistentPanics(Config{PartitionCount: 10, ReplicationFactor: 20, Load: 1}, 3) {
		t.Error("consistent no longer panics with Load 1 and 10 partitions on 3 members")
	}
}

// TestSetNeverPanics tries every member count from 0 to past MaxMembers on
// small valid configs, including the tightest load Validate accepts.
func TestSetNeverPanics(t *testing.T) {
	t.Parallel()
	for p := 1; p <= 24; p++ {
		for _, load := range []float64{math.Nextafter(1, 2), 1.25, 3} {
			cfg := Config{PartitionCount: p, ReplicationFactor: MinReplicationFactor, Load: load}
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for m := 0; m <= p+3; m++ {
				ids := nodeIDs(m)
				err := r.Set(ids)
				switch {
				case m <= cfg.MaxMembers() && err != nil:
					t.Fatalf("P=%d Load=%v: Set(%d members) = %v", p, load, m, err)
				case m > cfg.MaxMembers():
					if !errors.Is(err, ErrTooManyMembers) {
						t.Fatalf("P=%d: Set(%d members) = %v, want ErrTooManyMembers", p, m, err)
					}
					if got := r.Snapshot().Len(); got != cfg.MaxMembers() {
						t.Fatalf("P=%d: after a failed Set the ring has %d members, want the previous %d", p, got, cfg.MaxMembers())
					}
				default:
					s := r.Snapshot()
					for k := range 50 {
						if o, ok := s.Owner(fmt.Sprint("user-", k)); (m > 0) != ok || (ok && !s.Contains(o)) {
							t.Fatalf("P=%d m=%d: Owner = %q, %v", p, m, o, ok)
						}
					}
				}
			}
		}
	}
}
