// Package embedded is Herald's default message store: a storage.Messages on
// Pebble (github.com/cockroachdb/pebble), an embedded LSM key-value engine,
// in a directory on local disk. It needs no server and survives restarts.
//
// Pebble was chosen over bbolt by measurement (benchmarks/RESULTS.md):
// every append is synced to disk before it returns, and Pebble's WAL
// commits concurrent synced writes as a group, which gave 3 to 5 times
// bbolt's appends per second at 16 to 256 concurrent writers.
//
// # Layout
//
// One keyspace with one-letter prefixes; message IDs are fixed-length and
// time-ordered, and user IDs never contain a NUL byte:
//
//	m <id>                    -> the message record
//	u <user> 0x00 <id>        -> (empty) the user's inbox, in ID order
//	b <id>                    -> (empty) broadcasts, in ID order
//	k <idempotency key>       -> <id><expiry ms>
//	e <expiry ms, 8 bytes> <id> -> (empty) the expiry index
//	f <id>                    -> (empty) a fence: this ID is never stored
//
// An append is one synced batch holding all of a message's keys, so it is
// atomic. Idempotency keys are checked and written under a lock striped by
// key, which is exact because one process owns the directory. Replay merges
// the user's inbox with the broadcasts after the cursor and skips expired
// messages; DeleteExpired walks the expiry index.
package embedded
