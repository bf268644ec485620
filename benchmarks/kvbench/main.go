// kvbench: compare bbolt (db.Batch group commit) and pebble (Batch.Commit(pebble.Sync))
// for a durable message store workload.
//
// Write mode: N goroutines append messages; each append writes
//
//	m/<id>                -> ~300-byte value
//	u/<user>/<id>         -> "" (one per recipient)
//	k/<idempotency key>   -> id   (preceded by a Get of the same key, as a dedup check)
//	e/<8-byte BE exp ms><id> -> ""
//
// and must be fsync'd before returning. Reports appends/s, p50/p99/max latency, RSS, disk size.
//
// Read mode: bulk-loads 250k messages x 4 recipients (= 1M u/ index keys, 2000 users),
// then times "replay": seek u/<user>/<afterID>, take next 100 index keys, Get each m/<id>.
//
// Examples:
//
//	go build -o kvbench . && ./kvbench -engine bolt -conc 16 -dur 5s -delay 2ms
//	./kvbench -engine pebble -conc 64 -dur 5s
//	./kvbench -engine pebble -mode read
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	bolt "go.etcd.io/bbolt"
)

var (
	engine     = flag.String("engine", "bolt", "bolt | pebble")
	mode       = flag.String("mode", "write", "write | read")
	conc       = flag.Int("conc", 16, "concurrent appenders")
	dur        = flag.Duration("dur", 5*time.Second, "write test duration")
	recips     = flag.Int("recips", 1, "recipients per append")
	dirFlag    = flag.String("dir", "", "data dir (default: fresh temp dir under /tmp, removed after)")
	label      = flag.String("label", "", "label printed in the result line")
	boltUpdate = flag.Bool("update", false, "bolt: use db.Update per append instead of db.Batch")
	boltGC     = flag.Bool("groupcommit", false, "bolt: own leader/follower group commit (one committer goroutine drains a queue into one Update, no timer) instead of db.Batch")
	batchSize  = flag.Int("batchsize", 1000, "bolt MaxBatchSize")
	batchDelay = flag.Duration("delay", 10*time.Millisecond, "bolt MaxBatchDelay")
	noFLSync   = flag.Bool("nofreelistsync", false, "bolt NoFreelistSync")
	hashmapFL  = flag.Bool("hashmap", false, "bolt FreelistType=hashmap")
	pCacheMB   = flag.Int("pcache", 64, "pebble block cache MB")
	pMemtabMB  = flag.Int("pmemtable", 32, "pebble memtable MB")
	pBloom     = flag.Bool("pbloom", true, "pebble: 10-bit bloom filters on all levels (pebble's default is NO filters)")
	settle     = flag.Bool("settle", true, "read mode, pebble: after load Flush and wait (<=60s) for compactions to finish before timing")
	replays    = flag.Int("replays", 3000, "read mode: number of replays timed")
	nUsers     = flag.Int("users", 10000, "write mode: distinct users")
)

// ---------- store abstraction ----------

type msg struct {
	id      []byte
	val     []byte
	users   [][]byte
	idemKey []byte
	expMs   uint64
}

type store interface {
	Append(m *msg) (dup bool, err error)
	BulkLoad(ms []*msg) error
	Replay(user []byte, afterID []byte, n int) (int, error)
	Close() error
}

func key(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

var (
	pM = []byte("m/")
	pU = []byte("u/")
	pK = []byte("k/")
	pE = []byte("e/")
	sl = []byte("/")
)

func expKey(m *msg) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], m.expMs)
	return key(pE, b[:], m.id)
}

// ---------- bbolt ----------

var bucket = []byte("s")

type boltStore struct {
	db     *bolt.DB
	update bool
	q      chan *gcReq // non-nil when -groupcommit
}

type gcReq struct {
	m    *msg
	dup  bool
	done chan error
}

// committer: take everything queued right now, commit it in one fsync'd
// transaction, answer, repeat. While a commit is in flight new requests queue
// up, so batches grow with load and there is no fixed delay at low load.
func (s *boltStore) committer() {
	const maxBatch = 1000
	reqs := make([]*gcReq, 0, maxBatch)
	for r := range s.q {
		reqs = append(reqs[:0], r)
	drain:
		for len(reqs) < maxBatch {
			select {
			case r2, ok := <-s.q:
				if !ok {
					break drain
				}
				reqs = append(reqs, r2)
			default:
				break drain
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for _, r := range reqs {
				d, err := boltPut(b, r.m)
				if err != nil {
					return err
				}
				r.dup = d
			}
			return nil
		})
		if err != nil && len(reqs) > 1 {
			// isolate the failing request: commit each one alone
			for _, r := range reqs {
				r.done <- s.db.Update(func(tx *bolt.Tx) error {
					d, err := boltPut(tx.Bucket(bucket), r.m)
					r.dup = d
					return err
				})
			}
			continue
		}
		for _, r := range reqs {
			r.done <- err
		}
	}
}

func openBolt(dir string) (*boltStore, error) {
	opts := &bolt.Options{Timeout: time.Second, NoFreelistSync: *noFLSync}
	if *hashmapFL {
		opts.FreelistType = bolt.FreelistMapType
	}
	db, err := bolt.Open(filepath.Join(dir, "store.db"), 0o600, opts)
	if err != nil {
		return nil, err
	}
	db.MaxBatchSize = *batchSize
	db.MaxBatchDelay = *batchDelay
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		return nil, err
	}
	s := &boltStore{db: db, update: *boltUpdate}
	if *boltGC {
		s.q = make(chan *gcReq, 4096)
		go s.committer()
	}
	return s, nil
}

func boltPut(b *bolt.Bucket, m *msg) (bool, error) {
	kk := key(pK, m.idemKey)
	if b.Get(kk) != nil {
		return true, nil // duplicate: do NOT return an error from a Batch fn (it would abort+rerun the whole batch)
	}
	if err := b.Put(key(pM, m.id), m.val); err != nil {
		return false, err
	}
	for _, u := range m.users {
		if err := b.Put(key(pU, u, sl, m.id), nil); err != nil {
			return false, err
		}
	}
	if err := b.Put(kk, m.id); err != nil {
		return false, err
	}
	return false, b.Put(expKey(m), nil)
}

func (s *boltStore) Append(m *msg) (bool, error) {
	if s.q != nil {
		r := &gcReq{m: m, done: make(chan error, 1)}
		s.q <- r
		err := <-r.done
		return r.dup, err
	}
	var dup bool
	fn := func(tx *bolt.Tx) error {
		dup = false // fn may be re-run: reset captured state every call
		d, err := boltPut(tx.Bucket(bucket), m)
		dup = d
		return err
	}
	var err error
	if s.update {
		err = s.db.Update(fn)
	} else {
		err = s.db.Batch(fn)
	}
	return dup, err
}

func (s *boltStore) BulkLoad(ms []*msg) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, m := range ms {
			if _, err := boltPut(b, m); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) Replay(user, afterID []byte, n int) (int, error) {
	prefix := key(pU, user, sl)
	start := key(prefix, afterID, []byte{0}) // strictly after afterID
	got := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		mk := make([]byte, 0, 64)
		for k, _ := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix) && got < n; k, _ = c.Next() {
			id := k[len(prefix):]
			mk = append(append(mk[:0], pM...), id...)
			v := b.Get(mk)
			if v == nil {
				return fmt.Errorf("missing message %s", id)
			}
			sink += len(v) // v is only valid inside the tx; copy if you keep it
			got++
		}
		return nil
	})
	return got, err
}

func (s *boltStore) Close() error {
	if s.q != nil {
		close(s.q)
	}
	return s.db.Close()
}

// ---------- pebble ----------

type pebbleStore struct {
	db    *pebble.DB
	cache interface{ Unref() }
}

func openPebble(dir string) (*pebbleStore, error) {
	cache := pebble.NewCache(int64(*pCacheMB) << 20)
	opts := &pebble.Options{
		Cache:        cache,
		MemTableSize: uint64(*pMemtabMB) << 20,
	}
	if *pBloom {
		opts.Levels = make([]pebble.LevelOptions, 7)
		for i := range opts.Levels {
			opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &pebbleStore{db: db, cache: cache}, nil
}

func pebbleGetExists(db *pebble.DB, k []byte) (bool, error) {
	_, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

func pebbleFill(b *pebble.Batch, m *msg) {
	b.Set(key(pM, m.id), m.val, nil)
	for _, u := range m.users {
		b.Set(key(pU, u, sl, m.id), nil, nil)
	}
	b.Set(key(pK, m.idemKey), m.id, nil)
	b.Set(expKey(m), nil, nil)
}

func (s *pebbleStore) Append(m *msg) (bool, error) {
	// NOTE: pebble has no read-modify-write transactions; a real store needs a
	// per-key lock (or single writer) around this check+commit to be race-free.
	dup, err := pebbleGetExists(s.db, key(pK, m.idemKey))
	if err != nil || dup {
		return dup, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	pebbleFill(b, m)
	return false, b.Commit(pebble.Sync)
}

func (s *pebbleStore) BulkLoad(ms []*msg) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, m := range ms {
		pebbleFill(b, m)
	}
	return b.Commit(pebble.NoSync)
}

func (s *pebbleStore) Replay(user, afterID []byte, n int) (int, error) {
	prefix := key(pU, user, sl)
	upper := key(pU, user, []byte{'/' + 1}) // exclusive upper bound of the prefix
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: key(prefix, afterID, []byte{0}), // strictly after afterID
		UpperBound: upper,
	})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	got := 0
	mk := make([]byte, 0, 64)
	for ok := it.First(); ok && got < n; ok = it.Next() {
		id := it.Key()[len(prefix):]
		mk = append(append(mk[:0], pM...), id...)
		v, closer, err := s.db.Get(mk)
		if err != nil {
			return got, fmt.Errorf("get %s: %w", id, err)
		}
		sink += len(v) // v valid only until closer.Close()
		closer.Close()
		got++
	}
	return got, it.Error()
}

func (s *pebbleStore) Close() error {
	err := s.db.Close()
	s.cache.Unref()
	return err
}

var sink int

// ---------- helpers ----------

func open(dir string) (store, error) {
	switch *engine {
	case "bolt":
		return openBolt(dir)
	case "pebble":
		return openPebble(dir)
	}
	return nil, fmt.Errorf("unknown engine %q", *engine)
}

func procStatus(field string) string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.Atoi(f[1])
				return fmt.Sprintf("%dMB", kb/1024)
			}
		}
	}
	return "?"
}

func diskSize(dir string) (apparent, alloc int64) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			apparent += fi.Size()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				alloc += st.Blocks * 512
			}
		}
		return nil
	})
	return
}

func mb(n int64) string { return fmt.Sprintf("%.1fMB", float64(n)/(1<<20)) }

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fus", float64(d)/1e3)
	}
}

// 20-char, time-ordered ids
func makeID(seq uint64) []byte {
	return []byte(fmt.Sprintf("%020d", seq))
}

var payloadAlphabet = []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:{}\"")

func makeVal(r *rand.Rand, id []byte) []byte {
	// ~300 bytes of JSON-ish text (partly compressible)
	v := make([]byte, 0, 300)
	v = append(v, `{"id":"`...)
	v = append(v, id...)
	v = append(v, `","topic":"notifications","ts":1700000000000,"body":"`...)
	for len(v) < 298 {
		v = append(v, payloadAlphabet[r.IntN(len(payloadAlphabet))])
	}
	return append(v, `"}`...)
}

func randHex(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return []byte(hex.EncodeToString(b))
}

func userName(u int) []byte { return []byte(fmt.Sprintf("user%05d", u)) }

// ---------- write mode ----------

func runWrite(s store, dir string) {
	var seq atomic.Uint64
	base := uint64(time.Now().UnixNano())
	var wg sync.WaitGroup
	lats := make([][]time.Duration, *conc)
	var errs atomic.Int64
	deadline := time.Now().Add(*dur)
	start := time.Now()
	for g := 0; g < *conc; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), base))
			for time.Now().Before(deadline) {
				id := makeID(base + seq.Add(1))
				m := &msg{id: id, val: makeVal(r, id), idemKey: randHex(r, 16),
					expMs: uint64(time.Now().Add(24 * time.Hour).UnixMilli())}
				first := r.IntN(*nUsers)
				for j := 0; j < *recips; j++ {
					m.users = append(m.users, userName((first+j)%*nUsers))
				}
				t0 := time.Now()
				_, err := s.Append(m)
				lats[g] = append(lats[g], time.Since(t0))
				if err != nil {
					if errs.Add(1) < 5 {
						fmt.Fprintln(os.Stderr, "append error:", err)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	rss, anon := procStatus("VmRSS"), procStatus("RssAnon")
	app, alloc := diskSize(dir)
	n := len(all)
	fmt.Printf("RESULT label=%s engine=%s conc=%d recips=%d appends=%d rate=%.0f/s p50=%s p99=%s max=%s rss=%s rssAnon=%s disk=%s diskAlloc=%s bytesPerAppend=%d errs=%d\n",
		*label, *engine, *conc, *recips, n, float64(n)/el.Seconds(),
		fmtDur(pct(all, .5)), fmtDur(pct(all, .99)), fmtDur(pct(all, 1)),
		rss, anon, mb(app), mb(alloc), app/int64(max(n, 1)), errs.Load())
}

// ---------- read mode ----------

const (
	rMsgs  = 250_000
	rRecip = 4
	rUsers = 2000
)

func runRead(s store, dir string) {
	t0 := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	const chunk = 5000
	batch := make([]*msg, 0, chunk)
	for i := 0; i < rMsgs; i++ {
		id := makeID(uint64(i))
		m := &msg{id: id, val: makeVal(r, id), idemKey: randHex(r, 16), expMs: uint64(1700000000000 + i)}
		for j := 0; j < rRecip; j++ {
			m.users = append(m.users, userName((rRecip*i+j)%rUsers))
		}
		batch = append(batch, m)
		if len(batch) == chunk {
			if err := s.BulkLoad(batch); err != nil {
				panic(err)
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := s.BulkLoad(batch); err != nil {
			panic(err)
		}
	}
	load := time.Since(t0)
	settleStr := "-"
	if ps, ok := s.(*pebbleStore); ok && *settle {
		t1 := time.Now()
		if err := ps.db.Flush(); err != nil {
			panic(err)
		}
		for time.Since(t1) < 60*time.Second {
			m := ps.db.Metrics()
			if m.Compact.NumInProgress == 0 && m.Compact.EstimatedDebt == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		settleStr = time.Since(t1).Round(time.Millisecond).String() + " L0files=" + strconv.Itoa(int(ps.db.Metrics().Levels[0].NumFiles))
	}
	app, alloc := diskSize(dir)
	// user u receives every (rUsers/rRecip)=500th message => 500 msgs per user.
	// afterSeq < rMsgs - 100*500 guarantees >= 100 messages after it.
	limit := rMsgs - 100*(rUsers/rRecip)
	doPass := func(n int) []time.Duration {
		d := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			u := r.IntN(rUsers)
			after := makeID(uint64(r.IntN(limit)))
			t := time.Now()
			got, err := s.Replay(userName(u), after, 100)
			d = append(d, time.Since(t))
			if err != nil || got != 100 {
				panic(fmt.Sprintf("replay user %d after %s: got %d err %v", u, after, got, err))
			}
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d
	}
	first := doPass(*replays)
	second := doPass(*replays)
	mean := func(d []time.Duration) time.Duration {
		var s time.Duration
		for _, x := range d {
			s += x
		}
		return s / time.Duration(len(d))
	}
	fmt.Printf("RESULT label=%s engine=%s mode=read load=%s(%d msgs,%d idx keys) settle=%s pass1: mean=%s p50=%s p99=%s | pass2: mean=%s p50=%s p99=%s rss=%s rssAnon=%s disk=%s diskAlloc=%s\n",
		*label, *engine, load.Round(time.Millisecond), rMsgs, rMsgs*rRecip, settleStr,
		fmtDur(mean(first)), fmtDur(pct(first, .5)), fmtDur(pct(first, .99)),
		fmtDur(mean(second)), fmtDur(pct(second, .5)), fmtDur(pct(second, .99)),
		procStatus("VmRSS"), procStatus("RssAnon"), mb(app), mb(alloc))
}

func main() {
	flag.Parse()
	dir := *dirFlag
	if dir == "" {
		d, err := os.MkdirTemp("/tmp", "kvbench-data-")
		if err != nil {
			panic(err)
		}
		dir = d
		defer os.RemoveAll(dir)
	}
	if *mode == "fsyncprobe" {
		runProbe(dir)
		return
	}
	s, err := open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(1)
	}
	switch *mode {
	case "write":
		runWrite(s, dir)
	case "read":
		runRead(s, dir)
	case "fsyncprobe":
		runProbe(dir)
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
	}
}

// raw disk probe: 4 KiB append + fdatasync in a loop for 2 s
func runProbe(dir string) {
	f, err := os.Create(filepath.Join(dir, "probe"))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var d []time.Duration
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		t := time.Now()
		f.Write(buf)
		syscall.Fdatasync(int(f.Fd()))
		d = append(d, time.Since(t))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	fmt.Printf("PROBE label=%s write4k+fdatasync n=%d p50=%s p99=%s\n", *label, len(d), fmtDur(pct(d, .5)), fmtDur(pct(d, .99)))
}
