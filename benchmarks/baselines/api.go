package baselines

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"time"
)

// Limits shared by every baseline, so that none of them does less work than
// Herald for the same traffic.
const (
	// MaxMessageBytes is the largest client message a baseline reads before it
	// closes the connection. It is Herald's --max-message-bytes default.
	MaxMessageBytes = 64 << 10

	// MaxBroadcastBytes caps the POST /broadcast body.
	MaxBroadcastBytes = 1 << 20

	// CloseTimeout bounds the close frame each baseline writes on shutdown.
	CloseTimeout = time.Second
)

// Hub is one library's WebSocket side of the contract. The common HTTP
// handler ([NewHandler]) calls it; every method may be called concurrently
// from any goroutine.
type Hub interface {
	// ServeWS upgrades the request, sends the ready frame for user before any
	// broadcast can reach the connection, and registers the connection until
	// it closes. On failure the library answers the HTTP request itself.
	ServeWS(w http.ResponseWriter, r *http.Request, user string)

	// Broadcast sends payload as one text frame to every open connection,
	// encoding the frame once where the library allows it. It returns once
	// every connection has been written to or has the frame queued, with the
	// number of connections it addressed. It must not keep payload after it
	// returns unless the library copies it.
	Broadcast(payload []byte) int

	// Conns is the number of open connections.
	Conns() int

	// Close sends a going-away close frame to every connection, closes them,
	// refuses new ones, and waits for every goroutine the hub started, or for
	// ctx. It is idempotent.
	Close(ctx context.Context) error
}

// Server is a running baseline: a listener, the HTTP contract, and a Hub.
type Server interface {
	// Start binds the listener and starts serving. It is called once.
	Start() error

	// Addr is the bound address (host:port), valid after Start.
	Addr() string

	// Shutdown closes the listener and every connection, and waits for every
	// goroutine the server started, or for ctx. It is idempotent.
	Shutdown(ctx context.Context) error
}

// NewHandler returns the HTTP side of the contract for h:
//
//	GET  /ws?token=<ignored>&user=<id>   WebSocket upgrade, then {"type":"ready","user":"<id>"}
//	POST /broadcast                      body sent as one text frame to every connection;
//	                                     answers {"conns":N,"took_ns":T}
//	GET  /stats                          {"conns":N,"goroutines":G,"heap_inuse":B,"heap_alloc":B}
func NewHandler(h Hub) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		h.ServeWS(w, r, r.URL.Query().Get("user"))
	})
	mux.HandleFunc("POST /broadcast", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBroadcastBytes))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		case err != nil:
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		case len(body) == 0:
			http.Error(w, "empty body", http.StatusBadRequest)
			return
		}
		start := time.Now()
		n := h.Broadcast(body)
		took := time.Since(start)
		writeJSON(w, broadcastResult{Conns: n, TookNS: took.Nanoseconds()})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		writeJSON(w, stats{
			Conns:      h.Conns(),
			Goroutines: runtime.NumGoroutine(),
			HeapInuse:  ms.HeapInuse,
			HeapAlloc:  ms.HeapAlloc,
		})
	})
	return mux
}

type broadcastResult struct {
	Conns  int   `json:"conns"`
	TookNS int64 `json:"took_ns"`
}

type stats struct {
	Conns      int    `json:"conns"`
	Goroutines int    `json:"goroutines"`
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// ReadyFrame returns the payload of the frame sent right after the upgrade:
// {"type":"ready","user":"<user>"}.
func ReadyFrame(user string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// Encoding a struct of two strings cannot fail.
	_ = enc.Encode(struct {
		Type string `json:"type"`
		User string `json:"user"`
	}{"ready", user})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
