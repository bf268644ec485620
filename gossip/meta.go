package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Roles a node can advertise. Meta.Roles holds a subset of these.
const (
	RoleAuth     = "auth"
	RoleCollect  = "collect"
	RoleDispatch = "dispatch"
	RolePush     = "push"
)

// knownRoles lists the roles in bit order: role i is bit 1<<i of the
// encoded bitmask. A role's bit never changes; new roles take new bits.
func knownRoles() [4]string { return [4]string{RoleAuth, RoleCollect, RoleDispatch, RolePush} }

// MaxMetaBytes is the largest encoded Meta: memberlist's limit on node
// metadata (memberlist.MetaMaxSize).
const MaxMetaBytes = 512

// metaFormat is the first byte of an encoded Meta. Fields are only ever
// appended to format 1, and decoders ignore bytes after the fields they
// know, so nodes of different versions read each other during a rolling
// upgrade. An incompatible layout would take a new format byte.
const metaFormat = 1

// Errors about metadata.
var (
	// ErrMetaTooLarge: the encoded Meta exceeds MaxMetaBytes.
	ErrMetaTooLarge = errors.New("gossip: node metadata exceeds 512 bytes")
	// ErrInvalidMeta: a Meta is incomplete or malformed, or bytes from the
	// network do not decode as one.
	ErrInvalidMeta = errors.New("gossip: invalid node metadata")
)

// Meta is what a node advertises to the cluster in its gossip metadata.
type Meta struct {
	// ID names the node and is stable across restarts. Required.
	ID string
	// Incarnation is random per process start, so a restarted node is a
	// new member. Required; must not contain '.'.
	Incarnation string
	// Roles is the node's subset of RoleAuth, RoleCollect, RoleDispatch
	// and RolePush. Decoded Metas list them in that order.
	Roles []string
	// RPCAddr is the internal RPC host:port.
	RPCAddr string
	// PublicURL is the public base URL, such as "http://10.0.0.5:8080";
	// clients derive ws://10.0.0.5:8080/ws from it.
	PublicURL string
	// Version is the Herald version the node runs.
	Version string
	// State is the node's short state, such as "running" or "draining".
	State string
}

// NodeName is the node's memberlist name: ID "." Incarnation.
func (m Meta) NodeName() string { return m.ID + "." + m.Incarnation }

// HasRole reports whether the node advertises role r.
func (m Meta) HasRole(r string) bool { return slices.Contains(m.Roles, r) }

// Validate reports whether m can be advertised: ID and Incarnation set,
// only known roles, each once, and an encoding that fits MaxMetaBytes.
func (m Meta) Validate() error {
	_, err := m.Encode()
	return err
}

// Encode returns m's compact binary encoding:
//
//	byte    format (1)
//	byte    roles bitmask (auth 1, collect 2, dispatch 4, push 8)
//	string  ID, Incarnation, RPCAddr, PublicURL, Version, State
//
// where each string is a uvarint length followed by its bytes. It fails
// with ErrInvalidMeta or ErrMetaTooLarge.
func (m Meta) Encode() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	var roles byte
	for _, r := range m.Roles {
		bit := roleBit(r)
		if bit == 0 {
			return nil, fmt.Errorf("%w: unknown role %q", ErrInvalidMeta, r)
		}
		if roles&bit != 0 {
			return nil, fmt.Errorf("%w: role %q listed twice", ErrInvalidMeta, r)
		}
		roles |= bit
	}
	fields := m.fields()
	n := 2
	for _, f := range fields {
		n += uvarintLen(uint64(len(f))) + len(f)
	}
	if n > MaxMetaBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrMetaTooLarge, n)
	}
	b := make([]byte, 0, n)
	b = append(b, metaFormat, roles)
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// DecodeMeta decodes what Encode produced. It never panics, whatever b
// holds: a peer's metadata comes from the network. Unknown role bits and
// bytes after the known fields are ignored (they come from newer versions).
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) < 2 {
		return Meta{}, fmt.Errorf("%w: %d bytes", ErrInvalidMeta, len(b))
	}
	if len(b) > MaxMetaBytes {
		return Meta{}, fmt.Errorf("%w: %d bytes", ErrMetaTooLarge, len(b))
	}
	if b[0] != metaFormat {
		return Meta{}, fmt.Errorf("%w: unknown format %d", ErrInvalidMeta, b[0])
	}
	var m Meta
	for i, r := range knownRoles() {
		if b[1]&(1<<i) != 0 {
			m.Roles = append(m.Roles, r)
		}
	}
	rest := b[2:]
	for _, dst := range []*string{&m.ID, &m.Incarnation, &m.RPCAddr, &m.PublicURL, &m.Version, &m.State} {
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return Meta{}, fmt.Errorf("%w: truncated", ErrInvalidMeta)
		}
		s := rest[n : n+int(l)]
		if !utf8.Valid(s) {
			return Meta{}, fmt.Errorf("%w: not UTF-8", ErrInvalidMeta)
		}
		*dst = string(s)
		rest = rest[n+int(l):]
	}
	if err := m.check(); err != nil {
		return Meta{}, err
	}
	return m, nil
}

// check validates the string fields.
func (m Meta) check() error {
	switch {
	case m.ID == "":
		return fmt.Errorf("%w: empty ID", ErrInvalidMeta)
	case m.Incarnation == "":
		return fmt.Errorf("%w: empty Incarnation", ErrInvalidMeta)
	case strings.Contains(m.Incarnation, "."):
		return fmt.Errorf("%w: Incarnation %q contains '.'", ErrInvalidMeta, m.Incarnation)
	}
	for _, f := range m.fields() {
		if !utf8.ValidString(f) {
			return fmt.Errorf("%w: not UTF-8", ErrInvalidMeta)
		}
	}
	return nil
}

func (m Meta) fields() [6]string {
	return [6]string{m.ID, m.Incarnation, m.RPCAddr, m.PublicURL, m.Version, m.State}
}

func roleBit(r string) byte {
	for i, k := range knownRoles() {
		if k == r {
			return 1 << i
		}
	}
	return 0
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// clone returns a copy of m that shares no memory with it.
func (m Meta) clone() Meta {
	m.Roles = slices.Clone(m.Roles)
	return m
}

// Member is a live member of the cluster.
type Member struct {
	Meta
	// Addr is the member's gossip host:port.
	Addr string
}
