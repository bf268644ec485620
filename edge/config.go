package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldpush/herald/storage"
)

// Identity is what an Authenticator learns from a token.
type Identity struct {
	// User is the user ID the connection belongs to.
	User string
	// Expires is when the token stops being valid; zero means never. The
	// edge closes the connection with CloseTokenExpired when it passes.
	Expires time.Time
}

// Authenticator turns a connection token into an identity. It is called
// from handshake goroutines, concurrently, before the upgrade.
type Authenticator interface {
	// Authenticate returns the token's identity. An error wrapping
	// ErrAuthUnavailable answers 503 (the client should retry); any other
	// error answers 401 with the error's text as the reason.
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// ErrAuthUnavailable is wrapped by Authenticator errors that say the auth
// service could not be reached, as opposed to the token being bad.
var ErrAuthUnavailable = errors.New("edge: auth service unavailable")

// Replayer supplies stored messages for a client that connects with since.
// It is called from handshake goroutines, concurrently.
type Replayer interface {
	// Replay has the contract of storage.Messages.Replay.
	Replay(ctx context.Context, q storage.ReplayQuery) ([]*storage.Message, bool, error)
}

// Listener is told when users come online and go offline on this edge and
// when clients ack, and supplies resume cursors. Online, Offline, Ack and
// Cursor are called with internal locks held, from many goroutines, and
// must return quickly without calling back into the Server; for one user,
// Online and Offline calls alternate and arrive in order.
type Listener interface {
	// Online: the user's first connection on this edge opened.
	Online(user string)
	// Offline: the user's last connection on this edge closed.
	Offline(user string)
	// Ack: a client acknowledged message id.
	Ack(user, id string)
	// Settle returns once what Online started for user is done (its
	// binding is written, or writing it failed), or ctx ends, with the
	// cursor for a connection registered before the call ("" if none can
	// be given yet). The edge calls it, without locks, after registering a
	// connection and before replaying or sending "ready": every message
	// dispatched after that point finds the user, and every message stored
	// before it is replayed, so none falls in between.
	Settle(ctx context.Context, user string) (cursor string)
	// Cursor returns the current cursor, without waiting: every message
	// with an ID at or below it that this edge's connections should get
	// has been handed to Deliver or Broadcast, or was stored before the
	// connection's replay read the store. "" means none can be given yet.
	Cursor() string
}

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// NodeID names this node in "ready" frames and logs.
	NodeID string

	// MaxMessageBytes is the largest client message, in bytes, after
	// reassembling fragments. A frame header claiming more closes the
	// connection with 1009 before any payload is buffered.
	MaxMessageBytes int
	// AllowedOrigins lists the browser origins allowed to connect, such as
	// "https://app.example.com". Requests without an Origin header, and
	// requests whose Origin is the server's own host, are always allowed.
	// "*" allows any origin; "https://*.example.com" allows subdomains.
	AllowedOrigins []string
	// HandshakeTimeout bounds reading the upgrade request and authenticating.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds the size of the upgrade request's header.
	MaxHeaderBytes int
	// MaxHeaderCount bounds the number of header fields in the request.
	MaxHeaderCount int
	// MaxHandshakes bounds handshakes (upgrade plus replay) in progress;
	// further requests wait up to HandshakeTimeout for a slot, then get 503.
	MaxHandshakes int

	// PingInterval is how often the server pings each connection.
	PingInterval time.Duration
	// IdleTimeout closes a connection (CloseIdle) that sent nothing, not
	// even a pong, for this long. It is checked once per PingInterval.
	IdleTimeout time.Duration
	// CloseTimeout is how long the server waits for the client's close
	// frame after sending its own before dropping the TCP connection.
	CloseTimeout time.Duration
	// Tick is the timing wheel's resolution.
	Tick time.Duration

	// WriteQueueBytes bounds the bytes queued for one connection. A client
	// that falls further behind is closed with CloseSlowConsumer; what it
	// missed stays in the store for replay.
	WriteQueueBytes int
	// SendBufferBytes, when positive, caps each connection's kernel send
	// buffer (SO_SNDBUF; the kernel doubles it for its bookkeeping). The
	// kernel otherwise grows it to megabytes for a client that does not
	// read, beyond WriteQueueBytes; 0 keeps the kernel's default.
	SendBufferBytes int
	// Workers is the number of goroutines that handle readable connections.
	Workers int
	// ReadBufferBytes is the size of each worker's read buffer.
	ReadBufferBytes int

	// ReplayPage is the most messages a replay reads from the store at
	// once. A page also stops at a quarter of WriteQueueBytes of message
	// data, and the next page is read only once the client has taken the
	// previous one, so a replaying connection holds at most about twice
	// WriteQueueBytes, whatever its backlog.
	ReplayPage int
	// ReplayWorkers bounds the replays (page reads) running at once; more
	// connections wait their turn, holding nothing but their place in
	// line. Replays do not hold handshake slots.
	ReplayWorkers int
	// ReplayRetryFor is how long a replay keeps reading a page again, with
	// backoff, while the store fails it (down, or too busy to answer in
	// time) before the connection is closed with CloseReplayFailed.
	ReplayRetryFor time.Duration
	// MaxSeen bounds the message IDs a client may list in seen= (or in a
	// resume frame): the messages above its cursor it already has.
	MaxSeen int
	// ResyncTimeout is how long a connection asked to resync (Resync) has
	// to answer with its resume position before it is closed with
	// CloseResync, so that it reconnects and resumes.
	ResyncTimeout time.Duration
	// ReplayWindow widens the replay of a client that sends since without
	// seen (an older client, which resumes from the last message ID it
	// saw) to messages up to this much older than since, because a message
	// accepted by one collector may be delivered after a later one from
	// another. Such clients drop the repeats by ID. A client that sends
	// seen (its cursor and the IDs above it it has) gets an exact replay.
	// Zero replays exactly the messages after since.
	ReplayWindow time.Duration
	// ReplayDedupe is how long after a replay the edge drops live copies of
	// the messages it replayed: a message stored before the replay read the
	// store may still be on its way through dispatch. It must exceed the
	// longest dispatch delay; only messages created this recently are
	// remembered.
	ReplayDedupe time.Duration

	// Auth authenticates tokens. Required.
	Auth Authenticator
	// Replayer serves since=; nil rejects since with 400.
	Replayer Replayer
	// Listener is told about presence and acks; nil ignores them.
	Listener Listener
	// Logger receives the edge's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the edge's metrics; nil registers none.
	Registerer prometheus.Registerer

	// portable selects the portable poller on Linux too (tests).
	portable bool
}

// DefaultConfig returns the defaults, each chosen for a public server that
// holds many mostly idle connections.
func DefaultConfig() Config {
	return Config{
		// Client messages are acks and pings; 64 KiB leaves room for any
		// future client message without letting one connection hold much.
		MaxMessageBytes: 64 << 10,
		// A browser sends its request at once; 10 s is generous for a slow
		// mobile network and short for a slowloris.
		HandshakeTimeout: 10 * time.Second,
		// Browsers send well under 4 KiB of headers, cookies included;
		// 8 KiB is what common proxies accept.
		MaxHeaderBytes: 8 << 10,
		MaxHeaderCount: 64,
		// Enough concurrent handshakes to absorb a reconnect storm on a
		// small machine without unbounded goroutines.
		MaxHandshakes: 1024,
		// 25 s keeps NAT and proxy mappings (often 30-60 s idle) alive.
		PingInterval: 25 * time.Second,
		// Two missed pongs plus slack.
		IdleTimeout:  60 * time.Second,
		CloseTimeout: 2 * time.Second,
		Tick:         time.Second,
		// About a thousand typical messages; a client this far behind is
		// better served by replay than by a growing buffer.
		WriteQueueBytes: 1 << 20,
		// Reads are short and non-blocking; a few workers per core keep
		// every core busy without a goroutine per connection.
		Workers:         4 * runtime.GOMAXPROCS(0),
		ReadBufferBytes: 8 << 10,
		ReplayPage:      256,
		// Replays wait on the store, not the CPU: enough to keep a store
		// busy after a reconnect storm, few enough that their pages (at
		// most WriteQueueBytes/4 each) stay small in all.
		ReplayWorkers: 64,
		// A store failover (about 10 s on a replica set) is ridden out
		// without sending every replaying client back to reconnect.
		ReplayRetryFor: 30 * time.Second,
		// A client's cursor lags a few seconds at most; 128 IDs cover a
		// user receiving dozens of messages a second and fit a URL.
		MaxSeen: 128,
		// Ten seconds covers a client on a slow network; one that has not
		// answered by then is closed and resumes on its own.
		ResyncTimeout: 10 * time.Second,
		// Covers store latency and clock skew between collectors.
		ReplayWindow: 5 * time.Second,
		// Dispatch normally takes milliseconds; 30 s covers a backlog.
		ReplayDedupe: 30 * time.Second,
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	switch {
	case c.Auth == nil:
		return errors.New("edge config: Auth is required")
	case c.MaxMessageBytes < 125:
		return fmt.Errorf("edge config: MaxMessageBytes %d is below 125", c.MaxMessageBytes)
	case c.HandshakeTimeout <= 0:
		return errors.New("edge config: HandshakeTimeout must be positive")
	case c.MaxHeaderBytes < 1024:
		return fmt.Errorf("edge config: MaxHeaderBytes %d is below 1024", c.MaxHeaderBytes)
	case c.MaxHeaderCount < 8:
		return fmt.Errorf("edge config: MaxHeaderCount %d is below 8", c.MaxHeaderCount)
	case c.MaxHandshakes < 1:
		return errors.New("edge config: MaxHandshakes must be at least 1")
	case c.Tick <= 0:
		return errors.New("edge config: Tick must be positive")
	case c.PingInterval < c.Tick:
		return fmt.Errorf("edge config: PingInterval %v is shorter than Tick %v", c.PingInterval, c.Tick)
	case c.IdleTimeout < c.PingInterval:
		return fmt.Errorf("edge config: IdleTimeout %v is shorter than PingInterval %v", c.IdleTimeout, c.PingInterval)
	case c.CloseTimeout <= 0:
		return errors.New("edge config: CloseTimeout must be positive")
	case c.WriteQueueBytes < c.MaxMessageBytes:
		return fmt.Errorf("edge config: WriteQueueBytes %d is below MaxMessageBytes %d", c.WriteQueueBytes, c.MaxMessageBytes)
	case c.Workers < 1:
		return errors.New("edge config: Workers must be at least 1")
	case c.ReadBufferBytes < 512:
		return fmt.Errorf("edge config: ReadBufferBytes %d is below 512", c.ReadBufferBytes)
	case c.ReplayPage < 1:
		return errors.New("edge config: ReplayPage must be at least 1")
	case c.SendBufferBytes < 0:
		return errors.New("edge config: SendBufferBytes must not be negative")
	case c.ReplayWorkers < 1:
		return errors.New("edge config: ReplayWorkers must be at least 1")
	case c.ReplayRetryFor < 0:
		return errors.New("edge config: ReplayRetryFor must not be negative")
	case c.MaxSeen < 0 || c.MaxSeen > 4096:
		return errors.New("edge config: MaxSeen must be between 0 and 4096")
	case c.ResyncTimeout <= 0:
		return errors.New("edge config: ResyncTimeout must be positive")
	case c.ReplayWindow < 0:
		return errors.New("edge config: ReplayWindow must not be negative")
	case c.ReplayDedupe < 0 || c.ReplayDedupe > 24*time.Hour:
		return errors.New("edge config: ReplayDedupe must be between 0 and 24h")
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || strings.Count(u.Host, "*") > 1 {
			return fmt.Errorf("edge config: allowed origin %q is not scheme://host[:port] or *", o)
		}
	}
	return nil
}
