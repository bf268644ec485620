// Package chaos is Herald's fault-injection suite: a drill that runs a
// real cluster (Herald nodes as processes, each on a loopback IP of its
// own, a real redis-server, and a MongoDB-wire server), hundreds of
// clients that behave like the JS client, and producers that post to
// every node with idempotency keys and retries, while it injects faults
// one after another: a node frozen (SIGSTOP/SIGCONT), killed (-9) and
// restarted, a rolling restart (SIGTERM), a collector's clock skewed,
// Redis killed or flushed, the MongoDB-wire server killed, a node cut off
// from the others (gossip and RPC) while its clients stay connected, slow
// consumers, and a reconnect storm.
//
// A checker records every accepted message and every receipt by every
// device, and reports, per fault: the messages accepted, the deliveries
// lost (which must be 0), the duplicates a client that does not drop
// repeats would see, how long after the fault healed everything accepted
// had been delivered, and how many clients reconnected or resynced.
//
// The nodes run a chaos build of herald (go build -tags chaos), which
// takes faults at run time on a control endpoint (cmd/herald/chaos_on.go)
// and short timings (--chaos-fast). `make chaos` runs the full drill; a
// short one is part of `make test` (TestChaosShort); `herald-bench chaos`
// runs a long randomized soak (docs/RELIABILITY.md).
package chaos
