package mongo

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// Config configures a [Messages] store. Start from [DefaultConfig] and set
// at least URI.
type Config struct {
	// URI is the MongoDB connection string, mongodb://host1,host2/?replicaSet=rs0
	// or mongodb+srv://.... Credentials, TLS and pool options go here. A
	// database in its path is ignored: Database names it. Required.
	URI string

	// Database holds the collection.
	Database string

	// Collection holds one document per message.
	Collection string

	// WriteConcern is the acknowledgement Append waits for before it
	// returns: "majority", a number of members ("1", "2", ...), or the name
	// of a custom write concern defined on the replica set. "0"
	// (unacknowledged) is refused: Append promises the write is durable.
	// It overrides any w= in URI.
	WriteConcern string

	// ConnectTimeout bounds opening one connection, TLS and authentication
	// included.
	ConnectTimeout time.Duration

	// ServerSelectionTimeout bounds how long a call waits for a server it
	// can use (the primary, for writes). While MongoDB is down or has no
	// primary, every call fails with storage.ErrUnavailable after this long.
	ServerSelectionTimeout time.Duration

	// OperationTimeout bounds each call whose context has no earlier
	// deadline, waiting for a server included.
	OperationTimeout time.Duration

	// MaxPoolSize caps the connections kept to each server; 0 keeps the
	// driver's default (100).
	MaxPoolSize uint64

	// TTLIndex asks MongoDB to delete expired messages by itself, through a
	// TTL index on the expiry time. Expiry never depends on it: reads skip
	// expired messages and DeleteExpired sweeps them either way. Servers
	// that refuse TTL indexes (FerretDB) get a plain index instead.
	TTLIndex bool

	// AppName is reported to the server and shows in its logs and
	// currentOp.
	AppName string

	// Logger receives the store's own events (index creation, MongoDB
	// unreachable at start). Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults; URI is left empty.
func DefaultConfig() Config {
	return Config{
		// One database per Herald cluster, named after the product, so an
		// operator finds it without reading the configuration.
		Database: "herald",
		// The collection holds messages and nothing else.
		Collection: "messages",
		// collect answers 202 only once a message is durable; on a replica
		// set only a majority write survives a failover.
		WriteConcern: "majority",
		// Loopback and LAN handshakes take milliseconds; a second wasted on
		// a dead host is already long for an API call waiting on it.
		ConnectTimeout: 2 * time.Second,
		// The driver's default of 30 s would hold every API call for 30 s
		// while MongoDB is down; 2 s lets collect answer 503 promptly. A
		// replica set failover (10 s election timeout by default) outlasts
		// it: calls during one fail with ErrUnavailable and are retried by
		// their callers, which is safe since Append is idempotent.
		ServerSelectionTimeout: 2 * time.Second,
		// Server selection plus one write or one indexed query, with margin
		// for a busy server. Callers with tighter budgets pass a deadline.
		OperationTimeout: 5 * time.Second,
		// The driver's default pool (100 per server) suits a collector.
		MaxPoolSize: 0,
		// On MongoDB the server's TTL monitor removes expired messages even
		// when no Herald node runs the sweeper.
		TTLIndex: true,
		AppName:  "herald",
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if c.URI == "" {
		return errors.New("mongo: URI is required")
	}
	switch {
	case strings.HasPrefix(c.URI, "mongodb://"):
		if err := options.Client().ApplyURI(c.URI).Validate(); err != nil {
			return fmt.Errorf("mongo: URI: %w", err)
		}
	case strings.HasPrefix(c.URI, "mongodb+srv://"):
		// Parsing resolves the SRV record; New does it, Validate does no I/O.
	default:
		return errors.New("mongo: URI must start with mongodb:// or mongodb+srv://")
	}
	if err := validateDatabase(c.Database); err != nil {
		return err
	}
	if err := validateCollection(c.Collection); err != nil {
		return err
	}
	if _, err := ParseWriteConcern(c.WriteConcern); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ConnectTimeout", c.ConnectTimeout},
		{"ServerSelectionTimeout", c.ServerSelectionTimeout},
		{"OperationTimeout", c.OperationTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("mongo: %s must be positive, got %v", d.name, d.v)
		}
	}
	return nil
}

// ParseWriteConcern parses the WriteConcern setting: "majority", a member
// count of at least 1, or a custom write concern name.
func ParseWriteConcern(s string) (*writeconcern.WriteConcern, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return nil, errors.New(`mongo: WriteConcern is required ("majority", "1", ...)`)
	case s == "majority":
		return writeconcern.Majority(), nil
	}
	if s[0] != '-' && s[0] != '+' && (s[0] < '0' || s[0] > '9') {
		return writeconcern.Custom(s), nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil || s[0] == '+':
		return nil, fmt.Errorf("mongo: WriteConcern %q is neither majority, a member count nor a write concern name", s)
	case n < 1:
		return nil, fmt.Errorf("mongo: WriteConcern %q: unacknowledged writes cannot promise durability; use 1 or more, or majority", s)
	}
	return &writeconcern.WriteConcern{W: n}, nil
}

// validateDatabase applies MongoDB's rules for database names, and
// FerretDB's stricter ones where a name would otherwise work on one server
// but not the other.
func validateDatabase(name string) error {
	if name == "" {
		return errors.New("mongo: Database is required")
	}
	if len(name) > 63 {
		return fmt.Errorf("mongo: Database %q is longer than 63 bytes", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("mongo: Database %q: use letters, digits, '_' and '-'", name)
		}
	}
	return nil
}

func validateCollection(name string) error {
	switch {
	case name == "":
		return errors.New("mongo: Collection is required")
	case len(name) > 200:
		return fmt.Errorf("mongo: Collection %q is longer than 200 bytes", name)
	case strings.HasPrefix(name, "system."), strings.HasPrefix(name, "."),
		strings.ContainsAny(name, "$\x00"):
		return fmt.Errorf("mongo: Collection %q is not a valid collection name", name)
	}
	return nil
}
