package edge

import (
	"log"
	"log/slog"
)

// slogErrorLog adapts a slog.Logger for net/http's ErrorLog, at debug level:
// what net/http reports there (TLS handshake noise, bad requests) is about
// clients, not the server.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}
