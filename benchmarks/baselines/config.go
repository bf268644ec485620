package baselines

import (
	"errors"
	"io"
	"log/slog"
)

// ErrNoAddr is returned by [Config.Validate] when no listen address is set.
var ErrNoAddr = errors.New("baselines: no listen address")

// Config is the configuration every baseline server takes.
type Config struct {
	// Addr is the TCP address to listen on. Port 0 picks a free port; read the
	// bound address back with Server.Addr after Start.
	Addr string

	// Logger receives server-level errors (never per-connection events).
	// nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config listening on a free loopback port: the load
// tool starts servers side by side and reads the port back.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:0"}
}

// Validate reports whether c can be used.
func (c Config) Validate() error {
	if c.Addr == "" {
		return ErrNoAddr
	}
	return nil
}

// Log returns c.Logger, or a logger that discards everything when it is nil.
func (c Config) Log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Logger
}
