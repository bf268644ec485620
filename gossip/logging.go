package gossip

import (
	"bytes"
	"context"
	"log/slog"
)

// logWriter turns memberlist's log lines ("[WARN] memberlist: ...") into
// debug records: memberlist logs every failed probe and refused join, which
// is routine in a cluster that changes. Its own level is kept as ml_level.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := ""
	if len(line) > 0 && line[0] == '[' {
		if i := bytes.IndexByte(line, ']'); i > 0 {
			level = string(line[1:i])
			line = bytes.TrimSpace(line[i+1:])
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	w.log.LogAttrs(context.Background(), slog.LevelDebug, string(line), slog.String("source", "memberlist"), slog.String("ml_level", level))
	return len(p), nil
}
