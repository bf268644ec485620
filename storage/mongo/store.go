package mongo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodriver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/heraldpush/herald/storage"
)

// Messages is a [storage.Messages] backed by a MongoDB collection. It is
// safe for concurrent use.
type Messages struct {
	cfg    Config
	log    *slog.Logger
	client *mongodriver.Client
	// coll writes with the configured write concern and reads from the
	// primary.
	coll *mongodriver.Collection
	// confirm reads what a write concern of majority has acknowledged (read
	// concern majority), so that Append reports a retried ID as stored
	// only once it is as durable as a first write would have been. With
	// other write concerns it is coll.
	confirm *mongodriver.Collection

	closed atomic.Bool
	// indexed is set once the indexes are known to exist; until then every
	// call first tries to create them (see ensureIndexes).
	indexed atomic.Bool
	// indexFailed records that an attempt failed, to log the recovery.
	indexFailed atomic.Bool
	// indexSem lets one call at a time create the indexes; it is a channel
	// so that waiting honours the caller's context.
	indexSem chan struct{}

	sweepBatch int // see defaultSweepBatch; tests lower it
}

var _ storage.Messages = (*Messages)(nil)

// New returns a store for cfg. It does not need MongoDB to be up: the
// driver connects in the background and reconnects by itself. New tries
// once, within ctx and cfg.OperationTimeout, to create the collection's
// indexes; if MongoDB is unreachable it logs that and returns the store
// anyway, and every later call tries again until the indexes exist (no
// message is written before the unique index on idempotency keys does). A
// refusal that retrying cannot fix (bad credentials, an index of the same
// name with other options) is returned.
func New(ctx context.Context, cfg Config) (*Messages, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wc, err := ParseWriteConcern(cfg.WriteConcern)
	if err != nil {
		return nil, err
	}
	opts := options.Client().ApplyURI(cfg.URI).
		SetAppName(cfg.AppName).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetServerSelectionTimeout(cfg.ServerSelectionTimeout).
		SetReadPreference(readpref.Primary()).
		// A client-wide timeout turns on the driver's client-side operation
		// timeout, which also sends maxTimeMS with every write: the server
		// gives up on an insert it could not finish in time instead of
		// applying it later, so an append the caller abandoned is settled
		// within OperationTimeout (see Resolve).
		SetTimeout(cfg.OperationTimeout)
	if cfg.MaxPoolSize > 0 {
		opts.SetMaxPoolSize(cfg.MaxPoolSize)
	}
	client, err := mongodriver.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("mongo: connect: %w", err)
	}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("database", cfg.Database, "collection", cfg.Collection)

	db := client.Database(cfg.Database)
	s := &Messages{
		cfg:        cfg,
		log:        logger,
		client:     client,
		coll:       db.Collection(cfg.Collection, options.Collection().SetWriteConcern(wc)),
		indexSem:   make(chan struct{}, 1),
		sweepBatch: defaultSweepBatch,
	}
	s.confirm = s.coll
	if wc.W == "majority" {
		s.confirm = db.Collection(cfg.Collection, options.Collection().
			SetWriteConcern(wc).
			SetReadConcern(readconcern.Majority()))
	}

	octx, cancel := s.opContext(ctx)
	err = s.ensureIndexes(octx)
	cancel()
	switch {
	case err == nil:
	case unavailable(err):
		s.log.WarnContext(ctx, "mongo: MongoDB unreachable at start; indexes will be created when it answers", "err", err)
	default:
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, wrap("open", err)
	}
	return s, nil
}

// opContext bounds one call by cfg.OperationTimeout unless ctx ends sooner.
func (s *Messages) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.OperationTimeout)
}

// begin starts a call: it fails once the store is closed, and makes sure
// the indexes exist.
func (s *Messages) begin(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("mongo: %s: %w", op, storage.ErrClosed)
	}
	if err := s.ensureIndexes(ctx); err != nil {
		return wrap(op, err)
	}
	return nil
}

// ensureIndexes creates the indexes unless a previous call did. Creating an
// index that exists with the same options is a no-op on the server, so
// several processes starting at once are fine.
func (s *Messages) ensureIndexes(ctx context.Context) error {
	if s.indexed.Load() {
		return nil
	}
	select {
	case s.indexSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("create indexes: %w", ctx.Err())
	}
	defer func() { <-s.indexSem }()
	if s.indexed.Load() {
		return nil
	}
	if err := s.createIndexes(ctx); err != nil {
		s.indexFailed.Store(true)
		return fmt.Errorf("create indexes: %w", err)
	}
	s.indexed.Store(true)
	if s.indexFailed.Load() {
		s.log.InfoContext(ctx, "mongo: MongoDB answers again; indexes created")
	}
	return nil
}

func (s *Messages) createIndexes(ctx context.Context) error {
	// One index per command: FerretDB 1.24 panics (and drops the
	// connection) when one createIndexes command names several indexes
	// that all exist already, which is every start but the first.
	for _, ix := range []mongodriver.IndexModel{
		// Replay: the recipients array makes it multikey, so one entry per
		// recipient, in ID order for each.
		{Keys: bson.D{{Key: fieldTo, Value: 1}, {Key: fieldID, Value: 1}}, Options: options.Index().SetName(indexInbox)},
		// Idempotency: one live or expired message per key.
		{Keys: bson.D{{Key: fieldKey, Value: 1}}, Options: options.Index().SetName(indexKey).SetUnique(true)},
	} {
		if _, err := s.coll.Indexes().CreateOne(ctx, ix); err != nil {
			return err
		}
	}
	expires := bson.D{{Key: fieldExpires, Value: 1}}
	if s.cfg.TTLIndex {
		_, err := s.coll.Indexes().CreateOne(ctx, mongodriver.IndexModel{
			Keys:    expires,
			Options: options.Index().SetName(indexExpires).SetExpireAfterSeconds(0),
		})
		if err == nil || unavailable(err) {
			return err
		}
		s.log.InfoContext(ctx, "mongo: server refused a TTL index; expired messages are removed by DeleteExpired only", "err", err)
	}
	// A plain index keeps DeleteExpired's sweep indexed where TTL indexes
	// are refused (FerretDB) or not wanted.
	_, err := s.coll.Indexes().CreateOne(ctx, mongodriver.IndexModel{
		Keys:    expires,
		Options: options.Index().SetName(indexExpires),
	})
	if err != nil && !unavailable(err) {
		// Typically a TTL index of that name exists while TTLIndex is off.
		s.log.InfoContext(ctx, "mongo: index on expiry time not created", "index", indexExpires, "err", err)
		return nil
	}
	return err
}

// Ping makes sure the indexes exist, then pings the primary. A store whose
// Ping succeeds can take writes; /readyz uses it.
func (s *Messages) Ping(ctx context.Context) error {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.begin(ctx, "ping"); err != nil {
		return err
	}
	if err := s.client.Ping(ctx, readpref.Primary()); err != nil {
		return wrap("ping", err)
	}
	return nil
}

// Close disconnects from MongoDB, waiting up to cfg.OperationTimeout for
// calls in flight. Calls after Close return storage.ErrClosed; closing
// again does nothing.
func (s *Messages) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.OperationTimeout)
	defer cancel()
	if err := s.client.Disconnect(ctx); err != nil && !errors.Is(err, mongodriver.ErrClientDisconnected) {
		return fmt.Errorf("mongo: close: %w", err)
	}
	return nil
}

// ServerTime returns the server's clock (the hello command's localTime),
// so a node can measure its own clock against it.
func (s *Messages) ServerTime(ctx context.Context) (time.Time, error) {
	if s.closed.Load() {
		return time.Time{}, fmt.Errorf("mongo: server time: %w", storage.ErrClosed)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	var reply struct {
		LocalTime time.Time `bson:"localTime"`
	}
	if err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&reply); err != nil {
		return time.Time{}, wrap("server time", err)
	}
	if reply.LocalTime.IsZero() {
		return time.Time{}, fmt.Errorf("mongo: server time: %w: hello has no localTime", storage.ErrUnavailable)
	}
	return reply.LocalTime, nil
}
