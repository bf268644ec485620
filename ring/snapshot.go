package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Errors returned by Set, NewSnapshot and Without.
var (
	// ErrTooManyMembers means the member count exceeds
	// Config.MaxMembers(), so consistent cannot place the partitions.
	ErrTooManyMembers = errors.New("ring: more members than partitions")
	// ErrEmptyMemberID means a member ID was "".
	ErrEmptyMemberID = errors.New("ring: empty member ID")
	// ErrPlacement means consistent failed to place the partitions although
	// the up-front checks said they fit. It should never happen; it exists
	// so that a surprise in consistent becomes an error and not a panic.
	ErrPlacement = errors.New("ring: consistent could not place partitions")
)

// Snapshot is an immutable view of the ring: a member set and the owner of
// every partition. It is safe for any number of concurrent readers, and no
// method changes what any method returns.
type Snapshot struct {
	cfg     Config
	members []string // sorted, distinct
	// owners[p] indexes members: the owner of partition p, copied out of
	// consistent when the snapshot was built. nil when members is empty.
	owners []int32
	// points is the hash circle consistent placed the partitions on,
	// sorted by hash; Owners walks it.
	points []point

	without sync.Map // member ID -> *withoutResult, memoizes Without
}

// point is one virtual node on the hash circle.
type point struct {
	hash   uint64
	member int32 // index into Snapshot.members
}

type withoutResult struct {
	once sync.Once
	s    *Snapshot
	err  error
}

// NewSnapshot builds a snapshot of members under cfg. members may be in any
// order and contain duplicates; an empty member set gives an empty
// snapshot. It fails if cfg is invalid, an ID is "", or there are more
// members than cfg.MaxMembers().
func NewSnapshot(cfg Config, members []string) (*Snapshot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ids, err := normalize(members)
	if err != nil {
		return nil, err
	}
	return build(cfg, ids)
}

// normalize returns a sorted, deduplicated copy of members.
func normalize(members []string) ([]string, error) {
	ids := slices.Clone(members)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > 0 && ids[0] == "" {
		return nil, ErrEmptyMemberID
	}
	return slices.Clip(ids), nil
}

// build places the partitions on ids, which must be sorted and distinct,
// under a valid cfg.
func build(cfg Config, ids []string) (*Snapshot, error) {
	s := &Snapshot{cfg: cfg, members: ids}
	if len(ids) == 0 {
		// consistent.New panics on a non-nil empty member list; an empty
		// ring needs nothing from it.
		return s, nil
	}
	if !cfg.fits(len(ids)) {
		return nil, fmt.Errorf("%w: %d members, PartitionCount %d", ErrTooManyMembers, len(ids), cfg.PartitionCount)
	}
	mems := make([]consistent.Member, len(ids))
	for i, id := range ids {
		mems[i] = member{name: id + sep, index: int32(i)}
	}
	c, err := place(cfg, mems)
	if err != nil {
		return nil, err
	}
	s.owners = make([]int32, cfg.PartitionCount)
	for p := range s.owners {
		m, ok := c.GetPartitionOwner(p).(member)
		if !ok {
			return nil, fmt.Errorf("%w: partition %d has no owner", ErrPlacement, p)
		}
		s.owners[p] = m.index
	}
	s.points = circle(cfg, ids)
	return s, nil
}

// place runs consistent.New. The checks in Validate and fits rule out every
// panic we know of; recover turns any other into ErrPlacement, so that a
// ring update can never crash the process.
func place(cfg Config, mems []consistent.Member) (c *consistent.Consistent, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("%w: %v", ErrPlacement, r)
		}
	}()
	return consistent.New(mems, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    cfg.PartitionCount,
		ReplicationFactor: cfg.ReplicationFactor,
		Load:              cfg.Load,
	}), nil
}

// sep ends every member name consistent sees. consistent names the points
// of member m as m + decimal(i); without a non-digit separator, members
// "node-1" and "node-11" would share points ("node-1"+"12" ==
// "node-11"+"2"), one would silently lose them and the result would depend
// on the order members were added. With it, name + decimal(i) is
// injective: the last '#' ends the member ID.
const sep = "#"

// member is how a node ID appears to consistent.
type member struct {
	name  string // ID + sep
	index int32  // into Snapshot.members
}

func (m member) String() string { return m.name }

// hasher is consistent's Hasher: 64-bit xxhash.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// circle rebuilds the hash circle exactly as consistent v0.10.0 builds it:
// point i of member m hashes fmt.Sprintf("%s%d", m.String(), i), members
// are added in ids order, and when two points collide the member added
// later owns the hash. Owners walks this circle; a test checks it against
// consistent's own placement.
func circle(cfg Config, ids []string) []point {
	pts := make([]point, 0, len(ids)*cfg.ReplicationFactor)
	var buf []byte
	for i, id := range ids {
		for r := range cfg.ReplicationFactor {
			buf = strconv.AppendInt(append(append(buf[:0], id...), sep...), int64(r), 10)
			pts = append(pts, point{hash: xxhash.Sum64(buf), member: int32(i)})
		}
	}
	slices.SortStableFunc(pts, func(a, b point) int { return cmp.Compare(a.hash, b.hash) })
	for i := len(pts) - 2; i >= 0; i-- {
		if pts[i].hash == pts[i+1].hash {
			pts[i].member = pts[i+1].member
		}
	}
	return pts
}

// partition returns the partition of key, as consistent's FindPartitionID
// computes it.
func (s *Snapshot) partition(key string) int {
	return int(xxhash.Sum64String(key) % uint64(s.cfg.PartitionCount))
}

// Owner returns the member that owns key, or "", false if the ring is
// empty.
func (s *Snapshot) Owner(key string) (string, bool) {
	if len(s.owners) == 0 {
		return "", false
	}
	return s.members[s.owners[s.partition(key)]], true
}

// Owners returns up to n distinct members for key in order of preference:
// Owner first, then the other members in the order they follow the key's
// partition clockwise on the hash circle. That is the order in which
// consistent offers the partition to members, so the second entry is
// usually, though under the load bound not always, the owner the key gets
// once the first member leaves; use Without for the exact answer. Because
// every member has many points, the second choices of one member's keys
// spread over all the others. It returns nil if n <= 0 or the ring is
// empty.
func (s *Snapshot) Owners(key string, n int) []string {
	if n <= 0 || len(s.owners) == 0 {
		return nil
	}
	return s.ownersOfPartition(s.partition(key), n)
}

// ownersOfPartition is Owners for partition p of a non-empty snapshot;
// n > 0.
func (s *Snapshot) ownersOfPartition(p, n int) []string {
	n = min(n, len(s.members))
	owner := s.owners[p]
	out := make([]string, 1, n)
	out[0] = s.members[owner]
	if n == 1 {
		return out
	}
	var seenBuf [16]int32
	seen := append(seenBuf[:0], owner)
	var seenMap []bool
	if n > len(seenBuf) {
		seenMap = make([]bool, len(s.members))
		seenMap[owner] = true
	}
	var pb [8]byte
	binary.LittleEndian.PutUint64(pb[:], uint64(p))
	h := xxhash.Sum64(pb[:])
	start, _ := slices.BinarySearchFunc(s.points, h, func(pt point, h uint64) int { return cmp.Compare(pt.hash, h) })
	for i := 0; i < len(s.points) && len(out) < n; i++ {
		m := s.points[(start+i)%len(s.points)].member
		if seenMap != nil {
			if seenMap[m] {
				continue
			}
			seenMap[m] = true
		} else {
			if slices.Contains(seen, m) {
				continue
			}
			seen = append(seen, m)
		}
		out = append(out, s.members[m])
	}
	return out
}

// Members returns the member IDs, sorted. The slice is a copy.
func (s *Snapshot) Members() []string { return slices.Clone(s.members) }

// Len returns the number of members.
func (s *Snapshot) Len() int { return len(s.members) }

// Contains reports whether id is a member.
func (s *Snapshot) Contains(id string) bool {
	_, ok := slices.BinarySearch(s.members, id)
	return ok
}

// Without returns the snapshot of the same ring without member id: the
// ownership the cluster will have once id has left, which is what a
// draining node tells its clients. It is the snapshot NewSnapshot builds
// from the other members, not an adjustment of this one. If id is not a
// member it returns s. The result is computed once per (snapshot, id) and
// then shared, so calling it per user is cheap.
func (s *Snapshot) Without(id string) (*Snapshot, error) {
	i, ok := slices.BinarySearch(s.members, id)
	if !ok {
		return s, nil
	}
	v, ok := s.without.Load(id)
	if !ok {
		v, _ = s.without.LoadOrStore(id, &withoutResult{})
	}
	w := v.(*withoutResult)
	w.once.Do(func() {
		rest := make([]string, 0, len(s.members)-1)
		rest = append(append(rest, s.members[:i]...), s.members[i+1:]...)
		w.s, w.err = build(s.cfg, rest)
	})
	return w.s, w.err
}
