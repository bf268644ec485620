// Package gossip is Herald's cluster membership. It hides
// hashicorp/memberlist: every Herald process joins one gossip cluster
// through seed addresses and advertises what it is (ID, roles, RPC and
// public addresses, version, state) in its node metadata, and every
// process learns the others from a stream of typed events.
//
// # Members and incarnations
//
// A node's memberlist name is Meta.ID "." Meta.Incarnation. The ID is
// stable across restarts and the incarnation is random per process start,
// so a restarted node is a new member: its previous life leaves (or is
// declared dead) on its own, and for a while both may be live. Consumers
// key by ID and use Incarnation to tell the two apart.
//
// Meta is encoded in a compact binary form (see [Meta.Encode]), typically
// 100 to 200 bytes; memberlist caps it at 512, which Validate and
// UpdateMeta enforce. Nodes whose metadata does not decode, or does not
// match their name, are refused by memberlist's alive delegate and never
// become members.
//
// # Events
//
// [Gossip.Events] delivers Join, Update and Leave events. memberlist's
// callbacks never block: they copy the node into a queue that one
// goroutine owned by the Gossip forwards to the channel. The queue is
// unbounded but coalesces while the consumer is behind: several Updates of
// a member become one with the latest Meta, an Update folds into a queued
// Join, and a Leave replaces a queued Update. A Join followed by a Leave
// is delivered as both. For each member, events arrive in memberlist's
// order: Join, any Updates, Leave (and Join again if a member declared
// dead comes back, for example after a partition heals). Events of
// different members are not reordered, except that a coalesced event keeps
// the position of the queued event it merged into. This node's own Join
// comes first (unless a peer's gossip reached the new listener before
// memberlist announced itself); after Leave, its own Leave follows.
//
// The channel is meant for one consumer goroutine, which should keep
// reading until Shutdown closes it. A consumer that falls behind delays
// only its own events: memberlist is never held up, and the queue grows
// by at most a few events per member while coalescing.
//
// # Failure detection
//
// A node that leaves gracefully ([Gossip.Leave]) is seen as a Leave by the
// others within a gossip round or two (about 0.4 s measured with the LAN
// profile). A node that crashes is probed, suspected and declared dead,
// which the others also see as a Leave: with the LAN profile (1 s probe
// interval, suspicion timeout at least 4 probe intervals) that took 6.8 s
// on loopback with 3 and with 5 nodes. In larger clusters the suspicion
// timeout starts at 6 times its minimum and shrinks as other members
// confirm the suspicion, so detection can take up to about 25 s. Until
// then the dead node is listed by Members. Leave events do not say
// whether the member left or failed.
//
// # Security
//
// With a ClusterSecret, gossip is encrypted with AES-GCM under a key
// derived from the secret with HKDF-SHA256 ([DeriveKey]), and every packet
// and stream carries a label derived from the secret ("herald-" and 8 hex
// digits). Nodes with a different secret, or none, drop each other's
// traffic, so clusters never merge by mistake. Without a secret, gossip is
// in clear text with the label "herald": development only. Other packages
// derive their own keys from the same secret with DeriveKey and their own
// purpose string.
//
// # Partitions
//
// memberlist forgets dead members and never contacts them again once its
// gossip-to-the-dead window (30 s on a LAN) has passed, so it does not
// re-merge the sides of a long partition on its own. The rejoin loop joins
// every RejoinInterval the seeds that are not live members, which also
// lets a node that started before any seed was up join the cluster later.
//
// # Lifecycle
//
// New validates the Config and starts nothing. Start creates the
// memberlist, joins the seeds (unreachable seeds are logged, not an
// error), and starts the forwarder and the rejoin loop. Leave broadcasts a
// graceful leave. Shutdown stops memberlist, stops and waits for the
// goroutines, and closes the Events channel last; without Leave, the
// others see a crash.
package gossip
