package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"

	"github.com/heraldpush/herald/storage"
)

// Options tune the store. The zero value is a sensible default.
type Options struct {
	// CacheBytes is Pebble's block cache (default 32 MiB).
	CacheBytes int64
	// NoSync skips syncing appends to disk: faster, and an accepted message
	// may be lost if the machine (not just the process) crashes. For tests
	// and benchmarks only.
	NoSync bool
	// Logger receives Pebble's notable events; nil discards them.
	Logger *slog.Logger
}

// Messages is the embedded storage.Messages.
type Messages struct {
	db    *pebble.DB
	sync  *pebble.WriteOptions
	seed  maphash.Seed
	locks [256]sync.Mutex

	// maxID is the greatest message ID ever stored (read at Open, raised
	// by Append). A new ID above it cannot be stored yet, so Append skips
	// the lookup a retry of a stored ID needs: fresh IDs are time-ordered,
	// so nearly every append skips it.
	idMu  sync.Mutex
	maxID string

	mu     sync.RWMutex // held for reading by every call, for writing by Close
	closed bool
}

var _ storage.Messages = (*Messages)(nil)

// Open opens (creating if needed) the store in dir. One process at a time
// may open a directory.
func Open(dir string, opts Options) (*Messages, error) {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 32 << 20
	}
	cache := pebble.NewCache(opts.CacheBytes)
	po := &pebble.Options{
		Cache:  cache,
		Logger: pebbleLogger{opts.Logger},
		// Every append first looks its ID and key up, and nearly all of
		// those lookups miss: bloom filters answer them without reading
		// blocks. (Pebble has no filters by default.)
		Levels: []pebble.LevelOptions{{FilterPolicy: bloom.FilterPolicy(10)}},
		// Pebble's 4 MiB default flushes a memtable every second or so at
		// 5,000 appends/s; each flush and the L0 compactions it triggers
		// write and sync sstables next to the WAL's fsyncs, and those
		// stalls were the tail of append latency. Pages of the arena are
		// touched (resident) only as it fills.
		MemTableSize: 64 << 20,
	}
	po.EnsureDefaults()
	db, err := pebble.Open(dir, po)
	cache.Unref() // the DB holds its own reference
	if err != nil {
		return nil, fmt.Errorf("open message store in %s: %w", dir, err)
	}
	m := &Messages{db: db, seed: maphash.MakeSeed(), sync: pebble.Sync}
	if opts.NoSync {
		m.sync = pebble.NoSync
	}
	if m.maxID, err = lastID(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open message store in %s: %w", dir, err)
	}
	return m, nil
}

// lastID is the greatest stored message ID ("" for none).
func lastID(db *pebble.DB) (string, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{'m'}, UpperBound: []byte{'m' + 1}})
	if err != nil {
		return "", fmt.Errorf("find the last message: %w", err)
	}
	var id string
	if it.Last() {
		id = string(it.Key()[1:])
	}
	if err := it.Close(); err != nil {
		return "", fmt.Errorf("find the last message: %w", err)
	}
	return id, nil
}

// mayHold reports whether id could already be stored.
func (s *Messages) mayHold(id string) bool {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return id <= s.maxID
}

// stored records that id is stored.
func (s *Messages) stored(id string) {
	s.idMu.Lock()
	if id > s.maxID {
		s.maxID = id
	}
	s.idMu.Unlock()
}

// pebbleLogger routes Pebble's log to slog, or nowhere.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil {
		p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l != nil {
		p.l.Error("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...)) // Pebble's contract: Fatalf must not return
}

// ---- keys

func msgKey(id string) []byte { return append([]byte{'m'}, id...) }

func inboxPrefix(user string) []byte {
	k := make([]byte, 0, len(user)+2+storage.IDLen)
	k = append(k, 'u')
	k = append(k, user...)
	return append(k, 0)
}

func inboxKey(user, id string) []byte { return append(inboxPrefix(user), id...) }

func broadcastKey(id string) []byte { return append([]byte{'b'}, id...) }

func idemKey(key string) []byte { return append([]byte{'k'}, key...) }

func fenceKey(id string) []byte { return append([]byte{'f'}, id...) }

func expiryKey(exp time.Time, id string) []byte {
	k := make([]byte, 9, 9+len(id))
	k[0] = 'e'
	binary.BigEndian.PutUint64(k[1:], uint64(max(exp.UnixMilli(), 0)))
	return append(k, id...)
}

// upperBound is the smallest key greater than every key with prefix p.
func upperBound(p []byte) []byte {
	u := bytes.Clone(p)
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] < 0xff {
			u[i]++
			return u[:i+1]
		}
	}
	return nil
}

// ---- records

const recordVersion = 1

func encode(m *storage.Message) []byte {
	b := make([]byte, 0, 32+len(m.Key)+len(m.Data)+len(m.To)*16)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(m.CreatedAt.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(max(m.ExpiresAt.UnixMilli(), 0)))
	var flags byte
	if m.Broadcast {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(m.Key)))
	b = append(b, m.Key...)
	b = binary.AppendUvarint(b, uint64(len(m.To)))
	for _, u := range m.To {
		b = binary.AppendUvarint(b, uint64(len(u)))
		b = append(b, u...)
	}
	return append(b, m.Data...)
}

var errCorrupt = errors.New("corrupt message record")

func decode(id string, b []byte) (*storage.Message, error) {
	if len(b) == 0 || b[0] != recordVersion {
		return nil, errCorrupt
	}
	b = b[1:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	str := func() (string, bool) {
		l, ok := next()
		if !ok || l > uint64(len(b)) {
			return "", false
		}
		s := string(b[:l])
		b = b[l:]
		return s, true
	}
	created, ok1 := next()
	expires, ok2 := next()
	if !ok1 || !ok2 || len(b) == 0 {
		return nil, errCorrupt
	}
	flags := b[0]
	b = b[1:]
	key, ok := str()
	if !ok {
		return nil, errCorrupt
	}
	n, ok := next()
	if !ok || n > storage.MaxRecipients {
		return nil, errCorrupt
	}
	m := &storage.Message{
		ID: id, Broadcast: flags&1 != 0, Key: key,
		CreatedAt: time.UnixMilli(int64(created)), ExpiresAt: time.UnixMilli(int64(expires)),
	}
	if n > 0 {
		m.To = make([]string, n)
		for i := range m.To {
			if m.To[i], ok = str(); !ok {
				return nil, errCorrupt
			}
		}
	}
	m.Data = bytes.Clone(b)
	return m, nil
}

// ---- operations

func (s *Messages) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return storage.ErrClosed
	}
	return nil
}

func (s *Messages) leave() { s.mu.RUnlock() }

func (s *Messages) lockFor(k string) *sync.Mutex {
	return &s.locks[maphash.String(s.seed, k)%uint64(len(s.locks))]
}

// Append implements storage.Messages.
func (s *Messages) Append(ctx context.Context, m *storage.Message) (*storage.Message, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("append %s: %w: %v", m.ID, storage.ErrUnavailable, err)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()

	lockKey := "i" + m.ID
	if m.Key != "" {
		lockKey = "k" + m.Key
	}
	mu := s.lockFor(lockKey)
	mu.Lock()
	defer mu.Unlock()

	// A retry of a stored ID stores nothing new; a fenced one nothing at all.
	if s.mayHold(m.ID) {
		if old, err := s.get(m.ID); err == nil {
			return old, nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("append %s: %w", m.ID, err)
		}
		if _, closer, err := s.db.Get(fenceKey(m.ID)); err == nil {
			closer.Close()
			return nil, fmt.Errorf("append %s: %w", m.ID, storage.ErrFenced)
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return nil, fmt.Errorf("append %s: read fence: %w", m.ID, err)
		}
	}
	now := time.Now()
	if m.Key != "" {
		v, closer, err := s.db.Get(idemKey(m.Key))
		switch {
		case err == nil:
			holder := string(v[:min(len(v), storage.IDLen)])
			var exp int64
			if len(v) == storage.IDLen+8 {
				exp = int64(binary.BigEndian.Uint64(v[storage.IDLen:]))
			}
			closer.Close()
			if exp > now.UnixMilli() {
				old, err := s.get(holder)
				if err != nil {
					return nil, fmt.Errorf("append %s: idempotency key held by %s: %w", m.ID, holder, err)
				}
				return old, fmt.Errorf("append %s: key %q: %w", m.ID, m.Key, storage.ErrDuplicate)
			}
			// The holder expired: the key is free again.
		case !errors.Is(err, pebble.ErrNotFound):
			return nil, fmt.Errorf("append %s: read idempotency key: %w", m.ID, err)
		}
	}

	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(msgKey(m.ID), encode(m), nil)
	if m.Broadcast {
		_ = b.Set(broadcastKey(m.ID), nil, nil)
	}
	for _, u := range m.To {
		_ = b.Set(inboxKey(u, m.ID), nil, nil) // a repeated recipient writes the same key twice: one entry
	}
	if m.Key != "" {
		v := make([]byte, 0, storage.IDLen+8)
		v = append(v, m.ID...)
		v = binary.BigEndian.AppendUint64(v, uint64(max(m.ExpiresAt.UnixMilli(), 0)))
		_ = b.Set(idemKey(m.Key), v, nil)
	}
	_ = b.Set(expiryKey(m.ExpiresAt, m.ID), nil, nil)
	if err := b.Commit(s.sync); err != nil {
		return nil, fmt.Errorf("append %s: commit: %w", m.ID, err)
	}
	s.stored(m.ID)
	return m, nil
}

// get reads a message whether or not it expired.
func (s *Messages) get(id string) (*storage.Message, error) {
	v, closer, err := s.db.Get(msgKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("message %s: %w", id, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read message %s: %w", id, err)
	}
	defer closer.Close()
	m, err := decode(id, v)
	if err != nil {
		return nil, fmt.Errorf("read message %s: %w", id, err)
	}
	return m, nil
}

// Get implements storage.Messages.
func (s *Messages) Get(_ context.Context, id string) (*storage.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	m, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if !m.ExpiresAt.After(time.Now()) {
		return nil, fmt.Errorf("message %s expired: %w", id, storage.ErrNotFound)
	}
	return m, nil
}

// Replay implements storage.Messages.
func (s *Messages) Replay(ctx context.Context, q storage.ReplayQuery) ([]*storage.Message, bool, error) {
	if q.Limit <= 0 {
		return nil, false, fmt.Errorf("%w: replay limit %d", storage.ErrInvalid, q.Limit)
	}
	if q.After != "" {
		if _, err := storage.ParseID(q.After); err != nil {
			return nil, false, err
		}
	}
	if err := storage.ValidateUser(q.User); err != nil {
		return nil, false, err
	}
	if err := s.enter(); err != nil {
		return nil, false, err
	}
	defer s.leave()

	inboxIt, err := s.idIter(inboxPrefix(q.User), q.After)
	if err != nil {
		return nil, false, err
	}
	defer inboxIt.close()
	bcastIt, err := s.idIter([]byte{'b'}, q.After)
	if err != nil {
		return nil, false, err
	}
	defer bcastIt.close()

	now := time.Now()
	var out []*storage.Message
	size := 0
	for {
		if len(out) >= q.Limit || (q.MaxBytes > 0 && size >= q.MaxBytes) {
			return out, true, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, false, fmt.Errorf("replay %s: %w: %v", q.User, storage.ErrUnavailable, err)
		}
		a, aok := inboxIt.peek()
		b, bok := bcastIt.peek()
		var id string
		switch {
		case !aok && !bok:
			return out, false, nil
		case aok && (!bok || a <= b):
			id = a
			inboxIt.next()
			if bok && a == b {
				bcastIt.next()
			}
		default:
			id = b
			bcastIt.next()
		}
		m, err := s.get(id)
		if errors.Is(err, storage.ErrNotFound) {
			continue // swept between the index and the record
		}
		if err != nil {
			return nil, false, fmt.Errorf("replay %s: %w", q.User, err)
		}
		if m.ExpiresAt.After(now) {
			out = append(out, m)
			size += len(m.Data)
		}
	}
}

// Resolve implements storage.Messages. An embedded Append never outlives
// its call, so once it has returned, its message is stored or never will
// be: Resolve reads it, and if it is absent writes a fence so that the ID
// can never be stored later.
func (s *Messages) Resolve(_ context.Context, m *storage.Message) (*storage.Message, error) {
	if _, err := storage.ParseID(m.ID); err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	mu := s.lockFor("i" + m.ID)
	mu.Lock()
	defer mu.Unlock()
	old, err := s.get(m.ID)
	switch {
	case err == nil:
		return old, nil
	case !errors.Is(err, storage.ErrNotFound):
		return nil, fmt.Errorf("resolve %s: %w", m.ID, err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(fenceKey(m.ID), nil, nil)
	_ = b.Set(expiryKey(m.ExpiresAt, m.ID), nil, nil) // the sweeper removes the fence with the expiry
	if err := b.Commit(s.sync); err != nil {
		return nil, fmt.Errorf("resolve %s: commit fence: %w", m.ID, err)
	}
	s.stored(m.ID) // Append must look for it
	return nil, nil
}

// idIter walks the IDs under a prefix, after a cursor.
type idIter struct {
	it     *pebble.Iterator
	prefix int
	valid  bool
}

func (s *Messages) idIter(prefix []byte, after string) (*idIter, error) {
	lower := bytes.Clone(prefix)
	if after != "" {
		lower = append(append(lower, after...), 0) // the first key after the cursor
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upperBound(prefix)})
	if err != nil {
		return nil, fmt.Errorf("replay iterator: %w", err)
	}
	return &idIter{it: it, prefix: len(prefix), valid: it.First()}, nil
}

func (i *idIter) peek() (string, bool) {
	if !i.valid {
		return "", false
	}
	return string(i.it.Key()[i.prefix:]), true
}

func (i *idIter) next() { i.valid = i.it.Next() }

func (i *idIter) close() { _ = i.it.Close() }

// DeleteExpired implements storage.Messages.
func (s *Messages) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{'e'},
		UpperBound: expiryKey(now.Add(time.Millisecond), ""),
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired: %w", err)
	}
	defer it.Close()
	deleted := 0
	b := s.db.NewBatch()
	defer func() { b.Close() }()
	flush := func() error {
		if b.Empty() {
			return nil
		}
		if err := b.Commit(pebble.NoSync); err != nil { // losing a delete only delays it
			return fmt.Errorf("delete expired: commit: %w", err)
		}
		b.Close()
		b = s.db.NewBatch()
		return nil
	}
	for valid := it.First(); valid; valid = it.Next() {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("delete expired: %w: %v", storage.ErrUnavailable, err)
		}
		ek := bytes.Clone(it.Key())
		id := string(ek[9:])
		_ = b.Delete(ek, nil)
		m, err := s.get(id)
		if errors.Is(err, storage.ErrNotFound) {
			_ = b.Delete(fenceKey(id), nil) // a fence expires like the message it stands for
			continue
		}
		if err != nil {
			return deleted, fmt.Errorf("delete expired: %w", err)
		}
		if err := s.deleteMessage(b, m); err != nil {
			return deleted, err
		}
		deleted++
		if b.Count() > 10000 {
			if err := flush(); err != nil {
				return deleted, err
			}
		}
	}
	return deleted, flush()
}

// deleteMessage adds the deletion of m's keys to b. The idempotency key is
// deleted only if it still points at m (a later message may have taken it).
func (s *Messages) deleteMessage(b *pebble.Batch, m *storage.Message) error {
	_ = b.Delete(msgKey(m.ID), nil)
	if m.Broadcast {
		_ = b.Delete(broadcastKey(m.ID), nil)
	}
	for _, u := range m.To {
		_ = b.Delete(inboxKey(u, m.ID), nil)
	}
	if m.Key == "" {
		return nil
	}
	mu := s.lockFor("k" + m.Key)
	mu.Lock()
	defer mu.Unlock()
	v, closer, err := s.db.Get(idemKey(m.Key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete expired: read key: %w", err)
	}
	ours := len(v) >= storage.IDLen && string(v[:storage.IDLen]) == m.ID
	closer.Close()
	if ours {
		// Commit now, under the key's lock, so an append that takes the key
		// next cannot be undone by this delete.
		if err := s.db.Delete(idemKey(m.Key), pebble.NoSync); err != nil {
			return fmt.Errorf("delete expired: delete key: %w", err)
		}
	}
	return nil
}

// Ping implements storage.Messages.
func (s *Messages) Ping(context.Context) error {
	if err := s.enter(); err != nil {
		return err
	}
	s.leave()
	return nil
}

// Close implements storage.Messages. It waits for calls in progress.
func (s *Messages) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close message store: %w", err)
	}
	return nil
}
