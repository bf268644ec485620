package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MinSecretLen is the shortest cluster secret accepted, in bytes.
const MinSecretLen = 16

// ServerConfig configures [NewServer]. Start from [DefaultServerConfig].
//
// A node has one server and one client, on different sides of the same
// protocol, so the package has two configs rather than one.
type ServerConfig struct {
	// Addr is the internal address to listen on, host:port. ":0" picks a
	// free port; read it back with [Server.Addr]. It must not be reachable
	// from outside the cluster's network.
	Addr string
	// Secret is the cluster secret every node shares. Callers that do not
	// present a credential derived from it are refused with
	// UNAUTHENTICATED. At least [MinSecretLen] bytes; use 32 random ones.
	Secret []byte
	// Handler serves the calls. Required.
	Handler Handler
	// MaxRecvMsgBytes bounds one incoming message: a Deliver batch or a
	// Submit request. It must exceed the largest message the cluster
	// accepts, with its recipients; a larger one breaks the stream that
	// carries it.
	MaxRecvMsgBytes int
	// TLS, when set, serves TLS with it (set ClientAuth and ClientCAs for
	// mutual TLS). Without it the transport is plaintext and the cluster
	// credential crosses the internal network in the clear, so anyone who
	// can watch that network can replay it: keep the internal port on a
	// private network, or set TLS.
	TLS *tls.Config
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultServerConfig returns a config with every default set; Secret and
// Handler remain to be set.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		// Beside memberlist's 7946, so the two internal ports share one
		// firewall rule.
		Addr: ":7947",
		// A delivery carries at most storage.MaxDataLen (4 MiB) of data
		// and MaxRecipients (10000) user IDs of up to 256 bytes: about
		// 6.6 MiB. 16 MiB takes the largest possible message with room to
		// spare, while a client's batches stay near BatchMaxBytes.
		MaxRecvMsgBytes: 16 << 20,
	}
}

// Validate reports the first problem with c; errors wrap [ErrInvalidConfig].
func (c *ServerConfig) Validate() error {
	switch {
	case c.Addr == "":
		return fmt.Errorf("%w: server Addr is required", ErrInvalidConfig)
	case len(c.Secret) < MinSecretLen:
		return fmt.Errorf("%w: server Secret of %d bytes is too short; use at least %d (32 random bytes is best)", ErrInvalidConfig, len(c.Secret), MinSecretLen)
	case c.Handler == nil:
		return fmt.Errorf("%w: server Handler is required", ErrInvalidConfig)
	case c.MaxRecvMsgBytes < 64<<10:
		return fmt.Errorf("%w: server MaxRecvMsgBytes %d is under 64 KiB", ErrInvalidConfig, c.MaxRecvMsgBytes)
	}
	return nil
}

// Source names the node a client sends for: the receiver keeps its
// delivery sessions, and the cursors they carry, per source.
type Source struct {
	ID          string
	Incarnation string
}

// ClientConfig configures [NewClient]. Start from [DefaultClientConfig].
type ClientConfig struct {
	// Secret is the cluster secret; see [ServerConfig.Secret].
	Secret []byte
	// Source is the node this client sends for. Required.
	Source Source
	// Cursors says the client sends cursors (Peer.Cursor): it is a
	// dispatch node's, and receivers hold their own cursor for it.
	Cursors bool

	// QueueLen bounds the deliveries one peer holds, queued or sent and
	// not yet acked; QueueBytes bounds their estimated size. A peer that
	// would go beyond either (it is slow, stuck or unreachable) has
	// everything it holds dropped at once, and its next session tells the
	// receiver which users it missed deliveries for. Enqueue never waits.
	QueueLen   int
	QueueBytes int
	// BatchMax is the most deliveries per batch.
	BatchMax int
	// BatchMaxBytes closes a batch early when its deliveries (data,
	// recipients and IDs, estimated) would exceed it. A single larger
	// delivery travels alone. Keep it well under the server's
	// MaxRecvMsgBytes.
	BatchMaxBytes int
	// BatchDelay is the longest a batch waits to fill up once it has its
	// first delivery. Zero sends whatever is queued at once. A cursor
	// closes a batch at once.
	BatchDelay time.Duration
	// Window is the most batches sent to one peer and not yet acked. A
	// full window stops the sender taking from the queue.
	Window int
	// AckTimeout bounds the wait for a batch's ack. When the oldest
	// unacked batch is older, the stream is cut and the sender reconnects
	// and sends the unacked batches again (the receiver drops what it had
	// already handled).
	AckTimeout time.Duration
	// DialTimeout bounds opening a connection and a Deliver stream.
	DialTimeout time.Duration
	// MaxBackoff caps the wait between attempts to reach an unreachable
	// peer. Waits start at min(100ms, MaxBackoff) and double, with jitter.
	MaxBackoff time.Duration
	// Dialer, if set, opens the TCP connections (tests inject faults
	// with it).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)

	// TLS, when set, dials with it (set Certificates for mutual TLS, and
	// RootCAs). See [ServerConfig.TLS] about running without it.
	TLS *tls.Config
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the client's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultClientConfig returns a config with every default set; Secret
// and Source remain to be set.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{
		// About a second of a busy dispatch node's traffic to one peer: a
		// peer stalled for several seconds (a long GC pause, a VM stall)
		// gets its deliveries when it wakes, and one stalled longer costs
		// no more memory than this and recovers from the store.
		QueueLen: 10000,
		// Message data is shared with the other peers and the store's
		// copy; this bounds what one stuck peer can pin.
		QueueBytes: 64 << 20,
		// 256 deliveries amortise the per-message gRPC and syscall cost
		// nearly fully; more only adds latency to the batch's tail.
		BatchMax:      256,
		BatchMaxBytes: 1 << 20,
		// 1 ms is invisible to a WebSocket user and fills batches at
		// rates where batching matters.
		BatchDelay: time.Millisecond,
		// 8 batches in flight cover the round trip of a LAN (or a busy
		// peer) without unbounded buffering: 8 MiB at most per peer.
		Window: 8,
		// A live push node acks a batch in milliseconds; 5 s means it is
		// stuck (or its network is): reconnect and send again.
		AckTimeout: 5 * time.Second,
		// A LAN connect takes milliseconds; 3 s rides out one lost SYN.
		DialTimeout: 3 * time.Second,
		// Gossip notices a dead node within seconds; retrying every 5 s
		// until then costs nothing.
		MaxBackoff: 5 * time.Second,
	}
}

// Validate reports the first problem with c; errors wrap [ErrInvalidConfig].
func (c *ClientConfig) Validate() error {
	switch {
	case len(c.Secret) < MinSecretLen:
		return fmt.Errorf("%w: client Secret of %d bytes is too short; use at least %d (32 random bytes is best)", ErrInvalidConfig, len(c.Secret), MinSecretLen)
	case c.Source.ID == "" || c.Source.Incarnation == "":
		return fmt.Errorf("%w: client Source needs an ID and an incarnation", ErrInvalidConfig)
	case c.QueueLen < 1:
		return fmt.Errorf("%w: client QueueLen must be at least 1", ErrInvalidConfig)
	case c.QueueBytes < 1024:
		return fmt.Errorf("%w: client QueueBytes %d is under 1 KiB", ErrInvalidConfig, c.QueueBytes)
	case c.BatchMax < 1:
		return fmt.Errorf("%w: client BatchMax must be at least 1", ErrInvalidConfig)
	case c.BatchMaxBytes < 1024:
		return fmt.Errorf("%w: client BatchMaxBytes %d is under 1 KiB", ErrInvalidConfig, c.BatchMaxBytes)
	case c.BatchDelay < 0:
		return fmt.Errorf("%w: client BatchDelay must not be negative", ErrInvalidConfig)
	case c.Window < 1:
		return fmt.Errorf("%w: client Window must be at least 1", ErrInvalidConfig)
	case c.AckTimeout <= 0:
		return fmt.Errorf("%w: client AckTimeout must be positive", ErrInvalidConfig)
	case c.DialTimeout <= 0:
		return fmt.Errorf("%w: client DialTimeout must be positive", ErrInvalidConfig)
	case c.MaxBackoff <= 0:
		return fmt.Errorf("%w: client MaxBackoff must be positive", ErrInvalidConfig)
	}
	return nil
}
