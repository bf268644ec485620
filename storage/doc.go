// Package storage defines what Herald keeps outside a node's memory and
// the embedded defaults that need no external server.
//
// Two interfaces cover it:
//
//   - [Messages] is the durable message store. collect appends every accepted
//     message to it before answering 202, and a reconnecting client replays
//     from it with since=<id>.
//   - [Bindings] maps a user ID to the push nodes that hold one of its
//     connections. Entries belong to one incarnation of a node and live only
//     while that incarnation's lease is alive, so a node that dies without
//     unbinding stops being returned within the lease TTL, and keeping a
//     node's bindings alive costs one command per node, not per connection.
//
// Backends live in subpackages so that importing this package links no
// database driver: storage/memory (in-memory bindings), storage/bolt (the
// embedded on-disk message store), storage/redis and storage/mongo. Every
// backend passes the same conformance suite in storage/storagetest.
//
// Message IDs ([NewIDGenerator]) are 20 characters, unique across processes
// and ordered by creation time, so that comparing two IDs as strings orders
// them by time and a replay cursor is simply the last ID a client saw.
package storage
