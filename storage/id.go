package storage

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// An ID is 20 characters of a base-32 alphabet whose ASCII order is its
// numeric order: 10 characters of milliseconds since the Unix epoch, 4 of a
// sequence within the millisecond, 6 of a per-generator random tag. IDs from
// one generator strictly increase; IDs from different generators (different
// collectors) are unique with overwhelming probability and ordered by their
// creation millisecond.
const (
	IDLen      = 20
	idTimeLen  = 10
	idSeqLen   = 4
	idTagLen   = 6
	idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	idSeqMax   = 1<<(5*idSeqLen) - 1
)

var idIndex = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(idAlphabet); i++ {
		t[idAlphabet[i]] = int8(i)
	}
	return t
}()

// IDGenerator makes time-ordered unique IDs. It is safe for concurrent use.
// If the clock goes backwards, IDs keep increasing from the last millisecond
// used.
type IDGenerator struct {
	mu   sync.Mutex
	now  func() time.Time
	tag  uint32
	last int64 // milliseconds of the last ID
	seq  uint32
}

// NewIDGenerator returns a generator with a random tag. now may be nil
// (time.Now).
func NewIDGenerator(now func() time.Time) *IDGenerator {
	if now == nil {
		now = time.Now
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return &IDGenerator{now: now, tag: binary.BigEndian.Uint32(b[:]) & (1<<(5*idTagLen) - 1)}
}

// Next returns a new ID and the millisecond it encodes.
func (g *IDGenerator) Next() (string, time.Time) {
	g.mu.Lock()
	ms := g.now().UnixMilli()
	switch {
	case ms > g.last:
		g.last, g.seq = ms, 0
	case g.seq < idSeqMax:
		g.seq++
	default: // a million IDs in one millisecond: borrow the next one
		g.last, g.seq = g.last+1, 0
	}
	ms, seq := g.last, g.seq
	g.mu.Unlock()

	var b [IDLen]byte
	putBase32(b[:idTimeLen], uint64(ms))
	putBase32(b[idTimeLen:idTimeLen+idSeqLen], uint64(seq))
	putBase32(b[idTimeLen+idSeqLen:], uint64(g.tag))
	return string(b[:]), time.UnixMilli(ms)
}

// Floor returns an ID that is less than or equal to every ID Next will
// return from now on: a watermark for "nothing below this will be issued
// any more". It is safe for concurrent use with Next.
func (g *IDGenerator) Floor() string {
	g.mu.Lock()
	ms := g.now().UnixMilli()
	last, seq := g.last, g.seq
	g.mu.Unlock()
	if ms > last {
		return IDAt(time.UnixMilli(ms))
	}
	// Next stays in millisecond last (or borrows last+1): its ID is at
	// least (last, seq+1) with the smallest tag.
	if seq >= idSeqMax {
		return IDAt(time.UnixMilli(last + 1))
	}
	var b [IDLen]byte
	putBase32(b[:idTimeLen], uint64(last))
	putBase32(b[idTimeLen:idTimeLen+idSeqLen], uint64(seq+1))
	putBase32(b[idTimeLen+idSeqLen:], 0)
	return string(b[:])
}

// PrevID returns the greatest ID that sorts before id, which must be
// well formed: the inclusive bound that goes with an exclusive one.
// PrevID of the smallest ID is "", which sorts before every ID.
func PrevID(id string) string {
	b := []byte(id)
	for i := len(b) - 1; i >= 0; i-- {
		v := idIndex[b[i]]
		if v > 0 {
			b[i] = idAlphabet[v-1]
			return string(b)
		}
		b[i] = idAlphabet[len(idAlphabet)-1] // borrow
	}
	return ""
}

// IDAt returns the smallest ID of millisecond t: every ID created at or
// after t compares greater than or equal to it, every earlier one less.
func IDAt(t time.Time) string {
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	var b [IDLen]byte
	putBase32(b[:idTimeLen], uint64(ms))
	for i := idTimeLen; i < IDLen; i++ {
		b[i] = idAlphabet[0]
	}
	return string(b[:])
}

// ParseID checks that id is well formed and returns the time it encodes.
// The error wraps [ErrInvalid].
func ParseID(id string) (time.Time, error) {
	if len(id) != IDLen {
		return time.Time{}, invalid("message id %q: want %d characters", truncate(id), IDLen)
	}
	var ms uint64
	for i := 0; i < IDLen; i++ {
		v := idIndex[id[i]]
		if v < 0 {
			return time.Time{}, invalid("message id %q: bad character at %d", truncate(id), i)
		}
		if i < idTimeLen {
			ms = ms<<5 | uint64(v)
		}
	}
	if ms > 1<<47 {
		return time.Time{}, invalid("message id %q: time out of range", truncate(id))
	}
	return time.UnixMilli(int64(ms)), nil
}

// ValidateUser checks a user ID: non-empty, at most MaxUserLen bytes, valid
// UTF-8 without control characters, and not the reserved BroadcastUser.
func ValidateUser(u string) error {
	switch {
	case u == "":
		return invalid("user id is empty")
	case len(u) > MaxUserLen:
		return invalid("user id longer than %d bytes", MaxUserLen)
	case u == BroadcastUser:
		return invalid("user id %q is reserved", u)
	case !utf8.ValidString(u):
		return invalid("user id is not valid UTF-8")
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f {
			return invalid("user id %q contains a control character", truncate(u))
		}
	}
	return nil
}

func putBase32(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = idAlphabet[v&31]
		v >>= 5
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
