package mongo

import (
	"strings"
	"time"

	"github.com/heraldpush/herald/storage"
)

// Field names of a message document. They are short because a document
// carries them once per message and indexes once per entry.
const (
	fieldID        = "_id"
	fieldTo        = "to"
	fieldBroadcast = "bc"
	fieldData      = "data"
	fieldKey       = "k"
	fieldCreated   = "ca"
	fieldExpires   = "ex"
	fieldFence     = "fn"
)

// Index names. Fixed names make creating them idempotent and let an
// operator recognise them.
const (
	indexInbox   = "to_1__id_1"
	indexKey     = "k_1"
	indexExpires = "ex_1"
)

// Prefixes of the k field: a caller's idempotency key, or the message's own
// ID when it has none, so that every document has a distinct k and a plain
// unique index needs no sparse or partial filter (which FerretDB lacks).
const (
	keyPrefix   = "k:"
	idPrefix    = "i:"
	fencePrefix = "f:"
)

// document is a message as stored. See the package documentation.
type document struct {
	ID        string    `bson:"_id"`
	To        []string  `bson:"to"`
	Broadcast bool      `bson:"bc"`
	Data      []byte    `bson:"data"` // BSON binary: the caller's JSON bytes, verbatim
	Key       string    `bson:"k"`
	CreatedAt time.Time `bson:"ca"`
	ExpiresAt time.Time `bson:"ex"`
	// Fence marks a document that stands for a message whose append was
	// abandoned (Messages.Resolve): it holds the ID so that the append can
	// never commit, has no recipients, and is never returned.
	Fence bool `bson:"fn,omitempty"`
}

// fenceDocument is the fence for message m: its ID, no recipients, m's
// expiry (so the sweeper removes it), and a key no message can have.
func fenceDocument(m *storage.Message) *document {
	return &document{ID: m.ID, To: []string{}, Data: []byte("null"), Key: fencePrefix + m.ID,
		CreatedAt: m.CreatedAt, ExpiresAt: m.ExpiresAt, Fence: true}
}

// storedKey is the k field of m.
func storedKey(m *storage.Message) string {
	if m.Key != "" {
		return keyPrefix + m.Key
	}
	return idPrefix + m.ID
}

func toDocument(m *storage.Message) *document {
	to := m.To
	if m.Broadcast {
		to = []string{storage.BroadcastUser}
	}
	return &document{
		ID:        m.ID,
		To:        to,
		Broadcast: m.Broadcast,
		Data:      m.Data,
		Key:       storedKey(m),
		CreatedAt: m.CreatedAt,
		ExpiresAt: m.ExpiresAt,
	}
}

func (d *document) message() *storage.Message {
	m := &storage.Message{
		ID:        d.ID,
		Broadcast: d.Broadcast,
		Data:      d.Data,
		CreatedAt: d.CreatedAt,
		ExpiresAt: d.ExpiresAt,
	}
	if !d.Broadcast {
		m.To = d.To
	}
	if k, ok := strings.CutPrefix(d.Key, keyPrefix); ok {
		m.Key = k
	}
	return m
}

// expired reports whether d has expired at now. Stored times have
// millisecond precision; so does the comparison the server makes.
func (d *document) expired(now time.Time) bool {
	return !d.ExpiresAt.After(now.Truncate(time.Millisecond))
}
