package ring

import (
	"errors"
	"fmt"
	"math"
)

// Limits that Validate enforces. They keep one Set cheap and bounded; they
// are far above anything a push cluster needs.
const (
	// MaxPartitionCount bounds PartitionCount: a snapshot keeps one 4-byte
	// entry per partition, and Set hashes and places every partition.
	MaxPartitionCount = 1 << 20
	// MinReplicationFactor is the smallest ReplicationFactor consistent
	// handles correctly; see Config.ReplicationFactor.
	MinReplicationFactor = 2
	// MaxReplicationFactor bounds ReplicationFactor: Set hashes and sorts
	// members × ReplicationFactor ring points.
	MaxReplicationFactor = 1 << 10
)

// Config configures the ring. Every node of a cluster must use the same
// Config: ownership is a pure function of (Config, member IDs), and nodes
// with different configs disagree about who owns a user.
type Config struct {
	// PartitionCount is the number of partitions user IDs are hashed into
	// (xxhash(user) mod PartitionCount). Partitions, not users, are assigned
	// to members, so it is the granularity of balance and of movement: one
	// member's share is a whole number of partitions. It is also the most
	// members a ring can hold: with more members than partitions consistent
	// cannot place them (see MaxMembers). Must be in [1, MaxPartitionCount].
	PartitionCount int

	// ReplicationFactor is the number of points (virtual nodes) each member
	// has on the hash circle. More points give each member a more even arc,
	// so fewer partitions overflow under the load bound and fewer move when
	// membership changes; the cost is members × ReplicationFactor hashes
	// and a sort per Set. Must be in [MinReplicationFactor,
	// MaxReplicationFactor]: with one point per member consistent's
	// placement walk can skip a member's only point and panic although the
	// partitions fit.
	ReplicationFactor int

	// Load is the bound of "consistent hashing with bounded loads": no
	// member owns more than ceil(floor(PartitionCount/members) × Load)
	// partitions. Lower is more even; higher moves fewer partitions when
	// membership changes. Must be finite and greater than 1: at 1 or below
	// the partitions only fit for some member counts, and consistent
	// panics for the others.
	Load float64
}

// DefaultConfig returns the defaults for a push cluster of 1 to a few
// hundred nodes. The measurements behind them are in the package
// documentation.
func DefaultConfig() Config {
	return Config{
		// A prime, as consistent advises. At 100 members each owns about 82
		// partitions, so the load bound is met closely and a membership
		// change moves about 1.1× the ideal share of users. At 1,021 to
		// 2,039 partitions the worst case is 1.3–1.6×, and at consistent's
		// 271 it is 2.3–3.2× (see the package documentation). Placing 8,191
		// partitions costs about 4 ms per Set. The ring holds up to 8,191
		// push nodes.
		PartitionCount: 8191,
		// With 50 points per member, arcs are even enough that few
		// partitions overflow the bound and cascade onto other members:
		// worst movement about 1.1× the ideal, against 1.55× at
		// consistent's 20. Set cost grows with members² ×
		// ReplicationFactor, about 50 ms at 100 members.
		ReplicationFactor: 50,
		// The paper's and consistent's 1.25. No push node holds more than
		// 125% of the mean share of users, which bounds the connection
		// memory to provision per node. 1.1 moves up to 1.4× the ideal
		// on membership changes; 1.5 lets one node carry half again its
		// share.
		Load: 1.25,
	}
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("ring: invalid config")

// Validate reports every problem with c. A valid Config never makes
// consistent panic for any member count up to MaxMembers.
func (c Config) Validate() error {
	var errs []error
	if c.PartitionCount < 1 || c.PartitionCount > MaxPartitionCount {
		errs = append(errs, fmt.Errorf("%w: PartitionCount %d is not in [1, %d]",
			ErrInvalidConfig, c.PartitionCount, MaxPartitionCount))
	}
	if c.ReplicationFactor < MinReplicationFactor || c.ReplicationFactor > MaxReplicationFactor {
		errs = append(errs, fmt.Errorf("%w: ReplicationFactor %d is not in [%d, %d]",
			ErrInvalidConfig, c.ReplicationFactor, MinReplicationFactor, MaxReplicationFactor))
	}
	if !(c.Load > 1) || math.IsInf(c.Load, 0) {
		errs = append(errs, fmt.Errorf("%w: Load %v must be finite and greater than 1",
			ErrInvalidConfig, c.Load))
	}
	return errors.Join(errs...)
}

// MaxMembers is the largest member count a ring with a valid c can hold:
// PartitionCount. consistent gives each member at most
// ceil(floor(PartitionCount/members) × Load) partitions, which is 0 once
// members exceed partitions.
func (c Config) MaxMembers() int { return c.PartitionCount }

// fits reports whether consistent can place c.PartitionCount partitions on
// m members without panicking. It mirrors consistent v0.10.0: the capacity
// of a member is averageLoad() = ceil(float64(P/m) × Load) (integer
// division), a partition goes to the first member on the circle whose load
// + 1 <= that capacity, and consistent panics when no member has room. With
// at least two distinct points per member the placement walk visits every
// member, so the partitions fit exactly when m × capacity >= P. For a
// valid Config (Load > 1) this is m <= PartitionCount; it is written out in
// full so a test can check it against consistent for any Load.
func (c Config) fits(m int) bool {
	if m == 0 {
		return true
	}
	if m < 0 || m > c.PartitionCount {
		return false
	}
	capacity := math.Ceil(float64(uint64(c.PartitionCount)/uint64(m)) * c.Load)
	return float64(m)*capacity >= float64(c.PartitionCount)
}
