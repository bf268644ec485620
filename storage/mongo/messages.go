package mongo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodriver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/heraldpush/herald/storage"
)

// appendAttempts bounds the inserts of one Append. A second insert is
// needed when an expired message held the key, or when the holder that
// caused a duplicate-key error vanished (swept) before it could be read;
// more means keys churning faster than we can read them, reported as
// ErrUnavailable.
const appendAttempts = 4

// defaultSweepBatch is about how many expired messages DeleteExpired
// removes per delete: small enough that each finishes well within
// OperationTimeout, large enough that a backlog clears quickly.
const defaultSweepBatch = 1000

// Append stores m with one insert, whatever the number of recipients. A
// duplicate-key error means the ID or the idempotency key is taken; see
// resolveDuplicate.
func (s *Messages) Append(ctx context.Context, m *storage.Message) (*storage.Message, error) {
	if m == nil {
		return nil, fmt.Errorf("mongo: append: %w: nil message", storage.ErrInvalid)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("mongo: append: %w", err)
	}
	op := "append " + m.ID
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	doc := toDocument(m)
	for attempt := 1; ; attempt++ {
		_, err := s.coll.InsertOne(ctx, doc)
		if err == nil {
			return m, nil
		}
		if !mongodriver.IsDuplicateKeyError(err) {
			return nil, wrap(op, err)
		}
		got, retry, err := s.resolveDuplicate(ctx, op, m, doc.Key)
		if !retry {
			return got, err
		}
		if attempt == appendAttempts {
			return nil, fmt.Errorf("mongo: %s: %w: duplicate key still unresolved after %d inserts", op, storage.ErrUnavailable, attempt)
		}
		if attempt > 1 { // the first retry usually follows deleting an expired holder
			if err := sleep(ctx, time.Duration(attempt)*5*time.Millisecond); err != nil {
				return nil, wrap(op, err)
			}
		}
	}
}

// resolveDuplicate finds out what an insert of m collided with. The
// server's error does not reliably say which index (FerretDB names none),
// so it looks: first for m's ID (a retry of a stored message: return it),
// then for the holder of key (live: ErrDuplicate with it; expired: delete it
// if it is still expired, and retry). retry is true when the insert should
// be tried again.
func (s *Messages) resolveDuplicate(ctx context.Context, op string, m *storage.Message, key string) (got *storage.Message, retry bool, err error) {
	var stored document
	err = s.confirm.FindOne(ctx, bson.D{{Key: fieldID, Value: m.ID}}).Decode(&stored)
	switch {
	case err == nil:
		return stored.message(), false, nil
	case !errors.Is(err, mongodriver.ErrNoDocuments):
		return nil, false, wrap(op, err)
	}

	var holder document
	err = s.coll.FindOne(ctx, bson.D{{Key: fieldKey, Value: key}}).Decode(&holder)
	now := time.Now()
	switch {
	case errors.Is(err, mongodriver.ErrNoDocuments):
		// Swept since the insert failed, or the stored copy of m.ID is not
		// yet majority-committed: look again.
		return nil, true, nil
	case err != nil:
		return nil, false, wrap(op, err)
	case holder.ID == m.ID:
		// An earlier try of this Append is stored but not yet acknowledged
		// at the write concern (confirm did not see it).
		return nil, false, fmt.Errorf("mongo: %s: %w: stored, not yet acknowledged by write concern %s",
			op, storage.ErrUnavailable, s.cfg.WriteConcern)
	case !holder.expired(now):
		return holder.message(), false, fmt.Errorf("mongo: %s: key %q held by %s: %w", op, m.Key, holder.ID, storage.ErrDuplicate)
	}
	// An expired message does not hold its key. Delete it only if it is
	// still that expired message (compare-and-delete), then insert again.
	_, err = s.coll.DeleteOne(ctx, bson.D{
		{Key: fieldID, Value: holder.ID},
		{Key: fieldExpires, Value: bson.D{{Key: "$lte", Value: now}}},
	})
	if err != nil {
		return nil, false, wrap(op, err)
	}
	return nil, true, nil
}

// Replay runs one query on the inbox index: recipients include user or the
// broadcast marker, ID after the cursor, not expired, in ID order.
func (s *Messages) Replay(ctx context.Context, user, after string, limit int) ([]*storage.Message, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("mongo: replay: %w", storage.ErrClosed)
	}
	if err := storage.ValidateUser(user); err != nil {
		return nil, fmt.Errorf("mongo: replay: %w", err)
	}
	if after != "" {
		if _, err := storage.ParseID(after); err != nil {
			return nil, fmt.Errorf("mongo: replay: cursor: %w", err)
		}
	}
	if limit <= 0 {
		return nil, fmt.Errorf("mongo: replay: %w: limit %d, want at least 1", storage.ErrInvalid, limit)
	}
	op := "replay " + user
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	filter := bson.D{{Key: fieldTo, Value: bson.D{{Key: "$in", Value: bson.A{user, storage.BroadcastUser}}}}}
	if after != "" {
		filter = append(filter, bson.E{Key: fieldID, Value: bson.D{{Key: "$gt", Value: after}}})
	}
	filter = append(filter, bson.E{Key: fieldExpires, Value: bson.D{{Key: "$gt", Value: time.Now()}}})
	cur, err := s.coll.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: fieldID, Value: 1}}).
		SetLimit(int64(limit)))
	if err != nil {
		return nil, wrap(op, err)
	}
	var docs []document
	if err := cur.All(ctx, &docs); err != nil {
		return nil, wrap(op, err)
	}
	out := make([]*storage.Message, len(docs))
	for i := range docs {
		out[i] = docs[i].message()
	}
	return out, nil
}

// Get reads one message by ID and reports ErrNotFound if it has expired.
func (s *Messages) Get(ctx context.Context, id string) (*storage.Message, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("mongo: get: %w", storage.ErrClosed)
	}
	if _, err := storage.ParseID(id); err != nil {
		return nil, fmt.Errorf("mongo: get: %w", err)
	}
	op := "get " + id
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	// Filtering on _id alone and checking the expiry here costs MongoDB
	// the same, and lets FerretDB use its primary key instead of scanning.
	var doc document
	err := s.coll.FindOne(ctx, bson.D{{Key: fieldID, Value: id}}).Decode(&doc)
	switch {
	case errors.Is(err, mongodriver.ErrNoDocuments):
		return nil, fmt.Errorf("mongo: %s: %w", op, storage.ErrNotFound)
	case err != nil:
		return nil, wrap(op, err)
	case doc.expired(time.Now()):
		return nil, fmt.Errorf("mongo: %s: %w (expired)", op, storage.ErrNotFound)
	}
	return doc.message(), nil
}

// DeleteExpired sweeps in batches of about sweepBatch messages, oldest
// expiry first: it reads the expiry time of the sweepBatch-th expired
// message (a covered query on the expiry index) and deletes every message
// that expires by then. Each batch gets its own OperationTimeout, so a large
// backlog makes progress however long it takes in all, and ctx bounds the
// whole sweep. On error it reports how many it removed before.
func (s *Messages) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("mongo: delete expired: %w", storage.ErrClosed)
	}
	total := 0
	for {
		n, more, err := s.sweep(ctx, now)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// sweep deletes one batch; more reports that expired messages may remain.
func (s *Messages) sweep(ctx context.Context, now time.Time) (n int, more bool, err error) {
	const op = "delete expired"
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, op); err != nil {
		return 0, false, err
	}
	upTo := now
	var boundary struct {
		ExpiresAt time.Time `bson:"ex"`
	}
	err = s.coll.FindOne(ctx, bson.D{{Key: fieldExpires, Value: bson.D{{Key: "$lte", Value: now}}}}, options.FindOne().
		SetSort(bson.D{{Key: fieldExpires, Value: 1}}).
		SetSkip(int64(s.sweepBatch-1)).
		SetProjection(bson.D{{Key: fieldExpires, Value: 1}, {Key: fieldID, Value: 0}})).
		Decode(&boundary)
	switch {
	case errors.Is(err, mongodriver.ErrNoDocuments):
		// Fewer than a batch left: delete them all.
	case err != nil:
		return 0, false, wrap(op, err)
	default:
		upTo, more = boundary.ExpiresAt, true
	}
	res, err := s.coll.DeleteMany(ctx, bson.D{{Key: fieldExpires, Value: bson.D{{Key: "$lte", Value: upTo}}}})
	if err != nil {
		return 0, false, wrap(op, err)
	}
	return int(res.DeletedCount), more, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
