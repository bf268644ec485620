// Package mongo is the MongoDB backend of [storage.Messages], on the
// official driver (go.mongodb.org/mongo-driver/v2).
//
// # Data model
//
// One document per message, in one collection (Config.Database and
// Config.Collection, "herald.messages" by default):
//
//	{
//	  _id:  "01jd5k8x2v0000ab3cde",   // the message ID: unique, time-ordered
//	  to:   ["alice", "bob"],          // recipients as appended, or ["*"] for a broadcast
//	  bc:   false,                     // broadcast
//	  data: BinData(0, "{\"n\":1}"),   // the caller's JSON bytes, verbatim
//	  k:    "k:order-1",               // "k:"+idempotency key, or "i:"+_id without one
//	  ca:   ISODate(...),              // created, millisecond precision
//	  ex:   ISODate(...),              // expires, millisecond precision
//	  fn:   true,                      // only on a fence (see Resolve), else absent
//	}
//
// Appending a message is one insert, whatever its number of recipients, so
// a message to 1,000 users costs one write and one document, not 1,000.
// data is stored as binary rather than as a BSON document so that Replay
// returns exactly the bytes collect accepted (key order, spacing, number
// formats). The recipient list is kept as given, order and repeats
// included; "*" ([storage.BroadcastUser]) is not a valid user ID, so it
// cannot collide with a real recipient.
//
// # Indexes
//
// New creates, idempotently and one per command:
//
//   - to_1__id_1 on {to: 1, _id: 1}: the inbox. to is an array, so the index
//     is multikey: one entry per recipient, in ID order for each. Replay is
//     the query {to: {$in: [user, "*"]}, _id: {$gt: after}, ex: {$gt: now}}
//     sorted by _id with a limit, which MongoDB answers by merging two index
//     ranges in order, reading only the documents it returns.
//   - k_1 on {k: 1}, unique: idempotency. Every document has a distinct k
//     (messages without a key use their own ID), so a plain unique index
//     does it, with no sparse or partial filter.
//   - ex_1 on {ex: 1}: a TTL index (expireAfterSeconds 0) when
//     Config.TTLIndex is set and the server accepts it, so that MongoDB
//     removes expired messages by itself; otherwise a plain index, which
//     keeps DeleteExpired's sweep indexed.
//
// # Idempotency without transactions
//
// Append inserts with the configured write concern. A duplicate-key error
// means the ID or the key is taken; the server does not reliably say which
// (FerretDB names no index), so Append looks: a stored document with the
// same ID is an earlier try of the same Append and is returned as success;
// otherwise the holder of the key is returned with [storage.ErrDuplicate]
// if it is live, and if it has expired it is deleted with a
// compare-and-delete ({_id: holder, ex: {$lte: now}}, so a concurrent
// replacement is never deleted) and the insert is tried again. The unique
// index makes concurrent appends with one key store exactly one message.
// With write concern majority, the read that confirms a retried ID uses read
// concern majority, so a retry is reported stored only once it is durable.
// Nothing needs a transaction, an upsert, or a change stream.
//
// # Settling an abandoned append
//
// An append whose caller gave up (a timeout) may still commit. Resolve
// settles it with a fence: it inserts a document with the same _id, no
// recipients and the key "f:"+_id. Exactly one of the two inserts wins on
// the unique _id. If the fence wins the message never commits (a later
// insert of its ID fails with [storage.ErrFenced]); if it loses, the
// stored document is returned. Fences match no Replay (their to is empty),
// Get reports them not found, and they expire with the message. The client
// sets a client-wide operation timeout, so every insert carries maxTimeMS
// and the server drops an insert it could not apply in time rather than
// applying it late.
//
// # Expiry
//
// Expiry never depends on the TTL index: Replay and Get filter on ex > now,
// so an expired message is invisible at once, and DeleteExpired deletes what
// has expired in batches of about a thousand, oldest first, each bounded by
// Config.OperationTimeout. The TTL monitor, where it runs, only makes the
// sweeper's work smaller.
//
// # Outages
//
// New does not need MongoDB to be up: the driver connects and reconnects in
// the background. If the indexes cannot be created at start, every call
// tries again first and fails with [storage.ErrUnavailable] until they
// exist, so no message is ever written without the unique key index. Calls
// fail fast while MongoDB is unreachable: Config.ServerSelectionTimeout
// bounds the wait for a usable server and Config.OperationTimeout the whole
// call. Network errors, timeouts, server selection failures, "not primary"
// and shutdown codes, and write concern failures all wrap
// [storage.ErrUnavailable]. Reads and writes go to the primary.
//
// # FerretDB
//
// The tests run against FerretDB 1.24 with its SQLite handler (see
// storage/mongo/mongotest), which differs from MongoDB in ways this design
// sidesteps: it has no transactions, change streams or TTL indexes (the TTL
// index is refused and logged at info level, and a plain index is created
// instead); it reports a duplicate key from an upsert as an internal error
// (Append uses plain inserts, which report E11000); its duplicate-key
// message names no index (Append looks instead); and a createIndexes
// command naming several indexes that all exist makes it panic and drop the
// connection (New creates one index per command). Its indexes on arrays are
// not multikey, so FerretDB filters Replay's recipients itself rather than
// through the index: correct, not fast.
package mongo
