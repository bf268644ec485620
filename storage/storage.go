package storage

import (
	"context"
	"encoding/json"
	"time"
)

// Limits every backend enforces, so that a message accepted by one backend
// is accepted by all of them.
const (
	// MaxRecipients is the most users one message may address. Larger
	// audiences are a broadcast or several messages.
	MaxRecipients = 10000
	// MaxUserLen is the longest user ID, in bytes.
	MaxUserLen = 256
	// MaxKeyLen is the longest idempotency key, in bytes.
	MaxKeyLen = 256
	// MaxDataLen is the largest message data, in bytes. Nodes enforce a
	// smaller configured limit; this one keeps every backend's documents
	// far below MongoDB's 16 MiB.
	MaxDataLen = 4 << 20
	// BroadcastUser is the reserved recipient that stands for "everyone" in
	// backends that index recipients. It is not a valid user ID.
	BroadcastUser = "*"
)

// Message is one message accepted by collect.
type Message struct {
	// ID is unique and time-ordered; see [IDGenerator]. The collector sets it
	// before Append.
	ID string
	// To lists the recipients. It is empty when Broadcast is set.
	To []string
	// Broadcast addresses every connected user, and every user who replays
	// after the message was created.
	Broadcast bool
	// Data is the caller's JSON value, stored and delivered verbatim.
	Data json.RawMessage
	// Key is the caller's idempotency key, or empty.
	Key string
	// CreatedAt is when the collector accepted the message (the time in ID).
	CreatedAt time.Time
	// ExpiresAt is when the message stops being replayed and may be deleted.
	ExpiresAt time.Time
}

// Validate checks the parts of m every backend relies on.
func (m *Message) Validate() error {
	if _, err := ParseID(m.ID); err != nil {
		return err
	}
	if m.Broadcast == (len(m.To) > 0) {
		return invalid("message %s: exactly one of recipients or broadcast is required", m.ID)
	}
	if len(m.To) > MaxRecipients {
		return invalid("message %s: %d recipients, at most %d", m.ID, len(m.To), MaxRecipients)
	}
	for _, u := range m.To {
		if err := ValidateUser(u); err != nil {
			return err
		}
	}
	if len(m.Key) > MaxKeyLen {
		return invalid("message %s: idempotency key longer than %d bytes", m.ID, MaxKeyLen)
	}
	if len(m.Data) > MaxDataLen {
		return invalid("message %s: data of %d bytes, at most %d", m.ID, len(m.Data), MaxDataLen)
	}
	if !json.Valid(m.Data) {
		return invalid("message %s: data is not valid JSON", m.ID)
	}
	if m.ExpiresAt.Before(m.CreatedAt) {
		return invalid("message %s: expires before it is created", m.ID)
	}
	return nil
}

// Addressed reports whether the message is for user.
func (m *Message) Addressed(user string) bool {
	if m.Broadcast {
		return true
	}
	for _, u := range m.To {
		if u == user {
			return true
		}
	}
	return false
}

// Messages is the durable message store.
//
// Implementations are safe for concurrent use. Every method honours ctx and
// returns an error wrapping [ErrUnavailable] when the backend cannot be
// reached, never blocking beyond the backend's configured timeouts.
type Messages interface {
	// Append stores m durably; it returns only once the backend has
	// acknowledged the write at its configured durability level. m must pass
	// [Message.Validate].
	//
	// If m.Key is set and an unexpired message with the same key exists,
	// Append stores nothing and returns that message with an error wrapping
	// [ErrDuplicate]. Concurrent appends with one key store exactly one
	// message. An expired message does not hold its key.
	//
	// Appending an ID that is already stored stores nothing new and returns
	// the stored message with a nil error, whatever its key, so retrying a
	// write whose outcome is unknown looks like the success it was.
	// Otherwise Append returns m itself.
	Append(ctx context.Context, m *Message) (*Message, error)

	// Replay returns, in ID order, the unexpired messages addressed to
	// q.User (listed in To, or broadcast) whose ID is greater than q.After
	// (an empty After means from the beginning): at most q.Limit of them,
	// and, with q.MaxBytes set, no more once their data adds up to
	// MaxBytes (the first is always returned, whatever its size). more
	// reports that the page was cut short by one of the limits: page on by
	// passing the last returned ID as After. An invalid user, cursor or
	// limit fails with [ErrInvalid].
	Replay(ctx context.Context, q ReplayQuery) (msgs []*Message, more bool, err error)

	// Resolve settles an earlier Append of m whose outcome is unknown (it
	// failed with [ErrUnavailable], or its caller gave up waiting): it
	// returns the stored message if that append committed, or nil if it
	// did not, in which case it never will (a later Append of m.ID fails
	// with [ErrFenced]). An error means the outcome is still unknown; call
	// again later. Resolve may be called any number of times.
	Resolve(ctx context.Context, m *Message) (*Message, error)

	// Get returns one unexpired message by ID, or an error wrapping
	// [ErrNotFound].
	Get(ctx context.Context, id string) (*Message, error)

	// DeleteExpired removes messages that expired at or before now, and
	// their idempotency keys, and reports how many it removed (a backend
	// that also expires messages in the background, such as a MongoDB TTL
	// index, does not count those). Replay never returns an expired message
	// whether or not it has been swept.
	DeleteExpired(ctx context.Context, now time.Time) (int, error)

	// Ping checks that the backend answers; /readyz uses it.
	Ping(ctx context.Context) error

	// Close releases the store. Calls after Close return [ErrClosed].
	Close() error
}

// ReplayQuery selects what [Messages.Replay] returns.
type ReplayQuery struct {
	// User whose messages (addressed to it, or broadcast) to return.
	User string
	// After is an exclusive lower bound on the IDs; "" for none.
	After string
	// Limit is the most messages to return; at least 1.
	Limit int
	// MaxBytes, when positive, stops the page once the data of the
	// messages returned adds up to at least MaxBytes.
	MaxBytes int
}

// Node identifies one incarnation of a push node. A restarted node keeps its
// ID and gets a new Incarnation, so bindings left by its previous life are
// never confused with its new ones.
type Node struct {
	ID          string
	Incarnation string
}

func (n Node) String() string { return n.ID + "/" + n.Incarnation }

// Bindings maps user IDs to the push nodes that hold their connections.
//
// A binding belongs to one node incarnation and is returned only while that
// incarnation holds a live lease. A push node renews its lease periodically
// (one command per node, whatever its connection count); a node that dies
// stops being returned when its lease expires, and [Bindings.Purge] removes
// its bindings at once when the cluster learns of the death earlier.
//
// A node incarnation stops binding once it is replaced: a process that has
// died cannot bind, and a restarted one leases under its new incarnation
// before it binds. (A late Bind from a replaced incarnation would overwrite
// its successor's binding of that user until the successor binds again.)
//
// Implementations are safe for concurrent use and return errors wrapping
// [ErrUnavailable] when the backend cannot be reached.
type Bindings interface {
	// Lease creates or renews n's lease for ttl. It returns fresh=true when
	// no lease of n was alive before the call (first start, a lapse longer
	// than the TTL, or a backend that lost its data); the caller must then
	// bind all its users again, since their bindings may be gone.
	Lease(ctx context.Context, n Node, ttl time.Duration) (fresh bool, err error)

	// Bind records that each of users has at least one connection on n.
	Bind(ctx context.Context, n Node, users []string) error

	// Unbind removes n's bindings of users. A binding written by another
	// incarnation of the same node ID is left alone.
	Unbind(ctx context.Context, n Node, users []string) error

	// Lookup returns, for each of users that has any, the IDs of the nodes
	// whose live incarnation binds it. Users with no live binding are absent
	// from the map. One call costs one round trip to the backend per batch,
	// not one per user. An invalid user ID fails the whole call with
	// [ErrInvalid].
	Lookup(ctx context.Context, users []string) (map[string][]string, error)

	// LeaseHolder returns the incarnation of node id whose lease is alive,
	// or "" if none is. A node that another one cannot reach over the
	// network may still be alive: its lease says whether it is.
	LeaseHolder(ctx context.Context, id string) (incarnation string, err error)

	// Purge removes every binding of incarnation n and its lease, and
	// reports how many bindings it removed. Bindings and the lease of a
	// different incarnation of n.ID are untouched (compare-and-delete).
	Purge(ctx context.Context, n Node) (int, error)

	// Ping checks that the backend answers.
	Ping(ctx context.Context) error

	// Close releases the client. Calls after Close return [ErrClosed].
	Close() error
}
