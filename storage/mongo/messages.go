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
	case err == nil && stored.Fence:
		return nil, false, fmt.Errorf("mongo: %s: %w", op, storage.ErrFenced)
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
// broadcast marker, ID after the cursor, not expired, in ID order. With
// MaxBytes it reads the cursor in small batches and stops once the page is
// full, so a backlog of large messages is never loaded whole.
func (s *Messages) Replay(ctx context.Context, q storage.ReplayQuery) ([]*storage.Message, bool, error) {
	if s.closed.Load() {
		return nil, false, fmt.Errorf("mongo: replay: %w", storage.ErrClosed)
	}
	if err := storage.ValidateUser(q.User); err != nil {
		return nil, false, fmt.Errorf("mongo: replay: %w", err)
	}
	if q.After != "" {
		if _, err := storage.ParseID(q.After); err != nil {
			return nil, false, fmt.Errorf("mongo: replay: cursor: %w", err)
		}
	}
	if q.Limit <= 0 {
		return nil, false, fmt.Errorf("mongo: replay: %w: limit %d, want at least 1", storage.ErrInvalid, q.Limit)
	}
	op := "replay " + q.User
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, op); err != nil {
		return nil, false, err
	}
	filter := bson.D{{Key: fieldTo, Value: bson.D{{Key: "$in", Value: bson.A{q.User, storage.BroadcastUser}}}}}
	if q.After != "" {
		filter = append(filter, bson.E{Key: fieldID, Value: bson.D{{Key: "$gt", Value: q.After}}})
	}
	filter = append(filter, bson.E{Key: fieldExpires, Value: bson.D{{Key: "$gt", Value: time.Now()}}})
	fo := options.Find().SetSort(bson.D{{Key: fieldID, Value: 1}}).SetLimit(int64(q.Limit))
	if q.MaxBytes > 0 {
		// The driver holds one batch at a time: keep it small, so that a
		// page stopped by MaxBytes has not read much beyond it.
		fo.SetBatchSize(int32(min(q.Limit, replayBatch)))
	}
	cur, err := s.coll.Find(ctx, filter, fo)
	if err != nil {
		return nil, false, wrap(op, err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var out []*storage.Message
	size := 0
	for cur.Next(ctx) {
		var d document
		if err := cur.Decode(&d); err != nil {
			return nil, false, wrap(op, err)
		}
		out = append(out, d.message())
		size += len(d.Data)
		if q.MaxBytes > 0 && size >= q.MaxBytes {
			return out, true, nil
		}
	}
	if err := cur.Err(); err != nil {
		return nil, false, wrap(op, err)
	}
	return out, len(out) == q.Limit, nil
}

// replayBatch is the cursor batch size of a Replay with MaxBytes.
const replayBatch = 16

// Resolve settles an append whose outcome is unknown by inserting a fence:
// a document with the message's ID and no recipients. The unique _id makes
// exactly one of the two writes win. If the fence wins, the append never
// commits; if it loses, the document that holds the ID is the message (or
// a fence from an earlier Resolve).
func (s *Messages) Resolve(ctx context.Context, m *storage.Message) (*storage.Message, error) {
	if m == nil {
		return nil, fmt.Errorf("mongo: resolve: %w: nil message", storage.ErrInvalid)
	}
	if _, err := storage.ParseID(m.ID); err != nil {
		return nil, fmt.Errorf("mongo: resolve: %w", err)
	}
	op := "resolve " + m.ID
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	_, err := s.coll.InsertOne(ctx, fenceDocument(m))
	if err == nil {
		return nil, nil
	}
	if !mongodriver.IsDuplicateKeyError(err) {
		return nil, wrap(op, err)
	}
	var d document
	err = s.coll.FindOne(ctx, bson.D{{Key: fieldID, Value: m.ID}}).Decode(&d)
	switch {
	case err == nil && d.Fence:
		return nil, nil
	case err == nil:
		return d.message(), nil
	case errors.Is(err, mongodriver.ErrNoDocuments):
		// The holder vanished (swept: it expired): nothing to deliver.
		return nil, nil
	}
	return nil, wrap(op, err)
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
	case doc.Fence:
		return nil, fmt.Errorf("mongo: %s: %w (fenced)", op, storage.ErrNotFound)
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
