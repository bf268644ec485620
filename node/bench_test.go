package node

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/embedded"
	"github.com/heraldpush/herald/storage/memory"
)

var benchSecret = []byte("benchmark-secret-of-enough-length")

// benchNode starts a node on a free port for a benchmark.
func benchNode(b *testing.B) *Node {
	msgs, err := embedded.Open(filepath.Join(b.TempDir(), "m"), embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	verifier, _ := auth.NewJWT(auth.JWTConfig{Secret: benchSecret})
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Addr = "bench", "127.0.0.1:0"
	cfg.Auth, cfg.APIKeys = verifier, []string{"bench-api-key-0123456789"}
	cfg.Messages, cfg.Bindings = msgs, memory.NewBindings(nil)
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Shutdown(context.Background()) })
	return n
}

// benchListener connects as user and counts the messages it reads.
func benchListener(b *testing.B, n *Node, user string) *atomic.Int64 {
	tok, _ := auth.Mint(benchSecret, user, time.Hour)
	c, _, err := websocket.Dial(context.Background(), "ws://"+n.Addr()+"/ws?token="+tok, nil)
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	var got atomic.Int64
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, p, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if strings.Contains(string(p), `"type":"ready"`) {
				close(ready)
			} else {
				got.Add(1)
			}
		}
	}()
	<-ready
	b.Cleanup(func() { c.CloseNow(); <-done })
	return &got
}

func waitCount(b *testing.B, c *atomic.Int64, want int64) {
	deadline := time.Now().Add(time.Minute)
	for c.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d", c.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkDispatch_1Recipient measures dispatch alone: one stored message
// to one online user, from the dispatcher's batch to the socket.
func BenchmarkDispatch_1Recipient(b *testing.B) {
	n := benchNode(b)
	got := benchListener(b, n, "bench-user")
	ids := storage.NewIDGenerator(nil)
	data := json.RawMessage(`{"title":"hello","n":1}`)
	batch := make([]queued, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		id, at := ids.Next()
		batch[0] = queued{m: &storage.Message{ID: id, To: []string{"bench-user"}, Data: data, CreatedAt: at, ExpiresAt: at.Add(time.Hour)}}
		n.dispatch.route(batch)
	}
	waitCount(b, got, int64(b.N))
}

// BenchmarkPost_1Recipient measures the whole path for one message: POST,
// durable append (fsync), 202, dispatch, and receipt by the client, with
// 16 concurrent posters.
func BenchmarkPost_1Recipient(b *testing.B) {
	n := benchNode(b)
	got := benchListener(b, n, "bench-user")
	url := "http://" + n.Addr() + "/v1/messages"
	body := `{"to":["bench-user"],"data":{"title":"hello"}}`
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer bench-api-key-0123456789")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	waitCount(b, got, int64(b.N))
}
