// Package ring maps user IDs to push nodes with consistent hashing with
// bounded loads (github.com/buraksezer/consistent, hashed with xxhash).
//
// Dispatch uses the ring to steer clients to a node, to hint where a
// draining node's clients should reconnect, and to route messages when
// Redis, the truth for user -> node, is unreachable.
//
// # How a user finds its owner
//
// A user ID hashes to one of Config.PartitionCount partitions:
// xxhash64(userID) mod PartitionCount. Each member (node ID) has
// Config.ReplicationFactor points on a hash circle. consistent gives each
// partition to the first member clockwise from the partition's hash that
// has room: no member may own more than ceil(floor(partitions/members) ×
// Config.Load) partitions. A snapshot copies that partition table out of
// consistent, so Owner is one hash, one modulo and two slice reads, with no
// lock and no allocation.
//
// Ownership is a pure function of the Config and the set of member IDs. All
// nodes of a cluster must run the same Config and the same version of this
// package, or they disagree about owners. The ring is pure: no I/O, no
// clock, no package-level state.
//
// # Concurrency
//
// One goroutine, the one that consumes gossip membership events, calls
// [Ring.Set]. It builds a new [Snapshot] and publishes it with an atomic
// pointer swap. Readers call [Ring.Snapshot] and use the snapshot for as
// long as they like. Snapshots are immutable and safe for concurrent use;
// a reader that needs several answers about one view of the ring (for
// example Owner, then Without) should take one snapshot and ask it
// everything.
//
// # What consistent panics on, and the guards
//
// consistent v0.10.0 panics instead of returning errors. Validate and Set
// rule out each case:
//   - A nil Hasher. The package always supplies xxhash.
//   - Zero fields. consistent silently replaces them with its defaults
//     (271, 20, 1.25), so Validate rejects them rather than let them
//     change ownership.
//   - A negative PartitionCount. It becomes a huge uint64 and placement
//     runs practically forever. Validate requires [1, MaxPartitionCount].
//   - ReplicationFactor below 2. Placement looks at every point but one,
//     starting at the partition's hash. A member with one point can be
//     the one skipped, so consistent panics with room left. A single
//     member always panics. Validate requires at least 2.
//   - Load of 1 or less, NaN or ±Inf. A member's capacity is
//     ceil(floor(P/N) × Load), and consistent panics ("not enough room to
//     distribute partitions") when N × capacity < P. At Load 1 that
//     happens whenever N does not divide P. Below 1 it happens almost
//     always, and NaN never fits. Validate requires a finite Load > 1.
//     Then N × capacity >= N × (floor(P/N) + 1) > P, so the partitions
//     fit for every N from 1 to P.
//   - More members than partitions. floor(P/N) = 0 makes the capacity 0
//     for any Load, so consistent panics. This depends on the member count,
//     so Set checks it ([Config.MaxMembers] = PartitionCount). When it
//     fails, Set returns [ErrTooManyMembers] and keeps the previous
//     snapshot. It does not truncate the member set or raise the load,
//     because every node must compute the same ring from the same
//     membership.
//   - An empty but non-nil member list. This panics for any config. An
//     empty ring never calls consistent.
//
// Any other panic is recovered and returned as [ErrPlacement].
//
// consistent also has a quiet flaw that the package works around. It
// names member m's points m + decimal(i), so "node-1" and "node-11" share
// points ("node-1"+"12" = "node-11"+"2"). The member added later takes
// over the shared point, and the result depends on the order members
// were added. The package hands consistent the name ID + "#", which is
// injective, and always adds members in sorted order.
//
// # Movement and balance
//
// When membership changes, consistent places every partition again. A
// changed member count changes every member's capacity, so partitions
// that overflow can cascade. Some users therefore move between two members
// that were there before and after, not only to a joining member or away
// from a leaving one. TestMovement measures this on DefaultConfig, with
// 100,000 keys "user-0".."user-99999" and members "node-1".."node-N".
// Join is the mean of 5 different new members. Leave is the mean over up
// to 10 removed members, evenly spread. Each cell gives the share of all
// users that changed owner, with the worst trial in brackets, then its
// ratio to the ideal 1/(N+1) or 1/N, then the share that moved between two
// unchanged members:
//
//	go test -run 'TestMovement$' -v ./ring/
//
//	  N | join moved (worst)    ratio  unchanged | leave moved (worst)   ratio  unchanged | keys max/min | Owners[1] ok
//	  2 | 32.13% (35.52%)       0.96×  0.00%     | 50.00% (55.09%)       1.00×  0.00%     | 1.10 / 0.90  | 100%
//	  3 | 26.73% (28.56%)       1.07×  0.00%     | 33.33% (35.70%)       1.00×  0.00%     | 1.07 / 0.95  | 100%
//	  5 | 16.06% (18.23%)       0.96×  0.00%     | 20.00% (20.91%)       1.00×  0.00%     | 1.05 / 0.96  | 100%
//	 10 | 10.18% (11.57%)       1.12×  0.22%     | 10.44% (13.21%)       1.04×  0.44%     | 1.24 / 0.82  |  99%
//	 20 |  5.27% (5.84%)        1.11×  0.31%     |  5.54% (6.64%)        1.11×  0.31%     | 1.27 / 0.80  |  99%
//	 50 |  1.82% (2.30%)        0.93×  0.00%     |  1.98% (2.61%)        0.99×  0.02%     | 1.24 / 0.66  | 100%
//	100 |  0.95% (1.12%)        0.96×  0.04%     |  1.03% (1.38%)        1.03×  0.11%     | 1.28 / 0.65  |  98%
//
// Reading the table:
//   - "keys max/min" is keys per member over the mean. The load bound caps
//     the busiest member at 1.25× in partitions. With 100,000 keys, about
//     12 per partition, sampling noise adds a little. There is no lower
//     bound: the least loaded node may hold two thirds of the mean.
//   - "Owners[1] ok" is the share of a leaving member's users whose
//     Owners(user, 2)[1] is the owner they really get afterwards.
//
// TestMovement fails if any trial moves more than twice the ideal, or if
// more than half the ideal moves between unchanged members.
//
// # Choice of defaults
//
// HERALD_RING_SWEEP=1 go test -run TestMovementSweep -v -timeout 0 ./ring/
// compares configs. It reports the worst mean movement ratio over N = 2 to
// 100. The findings:
//   - PartitionCount. 271 partitions (consistent's default) move 2.3–3.2×
//     the ideal, because one partition is a large share of a member's
//     users. 1,021–2,039 partitions move up to 1.3–1.6×, and 8,191 about
//     1.1×.
//   - ReplicationFactor. At consistent's 20 points, arcs are uneven
//     enough that overflow cascades: up to about 1.55× the ideal. 50
//     points bring it to about 1.1×. 100 points are no better on the
//     worst case and double the Set cost.
//   - Load. 1.1 balances tighter but moves up to 1.4× the ideal, and
//     three times as many users between unchanged members. 1.5 moves
//     about 1.08× but lets a node carry 1.5× the mean.
//
// # Cost
//
// go test -run XXX -bench . -benchmem ./ring/ on 2 vCPU AMD EPYC, Go 1.26:
//   - Owner: 16 ns, 0 allocations (7 ns per op with 2 goroutines through
//     Ring.Snapshot).
//   - Owners(key, 3): 255 ns, 1 allocation.
//   - Without(id).Owner after the first call: 95 ns, 0 allocations. The
//     first Without for a member of a snapshot costs the same as a Set.
//   - Set with 10 members: 4 ms, mostly placing the 8,191 partitions.
//   - Set with 100 members: 17 ms at ReplicationFactor 20 and 48 ms at 50.
//   - Set with 300 members: 113 ms at ReplicationFactor 20 and 431 ms at
//     50.
//
// Most of the Set cost is in consistent.New, which re-sorts the whole
// circle after adding each member. The cost therefore grows with members²
// × ReplicationFactor. Membership changes are rare and coalesced, so this
// is paid on the gossip goroutine, never per message. For clusters of
// several hundred nodes, lower ReplicationFactor.
package ring
