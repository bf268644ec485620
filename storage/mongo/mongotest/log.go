package mongotest

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// logEnv names the variable that streams FerretDB's log to stderr at the
// level it gives.
const logEnv = "HERALD_TEST_FERRETDB_LOG"

// maxLogLines bounds the in-memory log of one server: enough to see what
// happened around a failure, not the whole run.
const maxLogLines = 500

// logTail keeps the last maxLogLines records written to it.
type logTail struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func (l *logTail) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	l.mu.Lock()
	if len(l.lines) < maxLogLines {
		l.lines = append(l.lines, line)
	} else {
		l.lines[l.next] = line
		l.next = (l.next + 1) % maxLogLines
		l.full = true
	}
	l.mu.Unlock()
	return len(p), nil
}

// String returns the kept records, oldest first.
func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	if l.full {
		b.WriteString("... (older lines dropped)\n")
	}
	for i := range l.lines {
		b.WriteString(l.lines[(l.next+i)%len(l.lines)])
		b.WriteByte('\n')
	}
	return b.String()
}

// newLogger returns FerretDB's logger: to stderr when logEnv asks for it,
// else into tail (which may be nil: discard).
func newLogger(tail *logTail) *slog.Logger {
	if v := os.Getenv(logEnv); v != "" {
		var level slog.Level
		if err := level.UnmarshalText([]byte(v)); err != nil {
			level = slog.LevelInfo
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	var w io.Writer = io.Discard
	if tail != nil {
		w = tail
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
