package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/benchmarks/loadgen"
	"github.com/heraldpush/herald/benchmarks/proc"
	"github.com/heraldpush/herald/storage"
)

var (
	replayMsgs  = flag.Int("replay-msgs", 10000, "BenchmarkReplayMemory: stored messages")
	replayBytes = flag.Int("replay-bytes", 60<<10, "BenchmarkReplayMemory: data bytes per message")
	replayConns = flag.Int("replay-conns", 100, "BenchmarkReplayMemory: connections replaying at once")
)

// replayRun is the outcome of one replay measurement.
type replayRun struct {
	peakRSS  int64         // the node's highest RSS while the connections replayed
	baseRSS  int64         // its RSS before the replay (restarted on the stored backlog)
	took     time.Duration // from the first connect to the last ready
	messages int64         // messages received, all connections
}

// measureReplay stores msgs messages of size bytes for one user on a
// fresh node (embedded store, default limits), restarts it, then opens
// conns connections of that user at once, each resuming from before the
// first message, and samples the node's RSS until every connection has
// all of them in order and its ready frame.
func measureReplay(tb testing.TB, msgs, size, conns int) replayRun {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	b := binaries(tb)
	opts := loadgen.HeraldOptions{Bin: b.Herald, Dir: tb.TempDir(), Secret: []byte("replay-secret-of-at-least-32-bytes!!"),
		APIKey: "replay-api-key-16+", Cluster: []byte("replay-cluster-secret-32-bytes-long!!")}
	node, err := loadgen.StartHerald(ctx, opts, "replay-1", nil, "--standalone")
	if err != nil {
		tb.Fatalf("start herald: %v", err)
	}

	// Store the backlog, 16 POSTs at a time.
	const user = "replayer"
	data := `"` + strings.Repeat("r", max(size-2, 0)) + `"`
	ids := make([]string, msgs)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= msgs {
					return
				}
				id, err := postData(ctx, node.HTTP, "replay-api-key-16+", user, data)
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatalf("storing the backlog: %v", err)
	}
	sort.Strings(ids)
	// A fresh process on the same store replays: what it holds is the
	// replay's, not what the ingest left in its heap.
	if err := node.Stop(time.Minute); err != nil {
		tb.Fatalf("stop herald: %v", err)
	}
	if node, err = loadgen.StartHerald(ctx, opts, "replay-1", nil, "--standalone"); err != nil {
		tb.Fatalf("restart herald: %v", err)
	}
	tb.Cleanup(func() { _ = node.Stop(30 * time.Second) })
	base, err := proc.SettledRSS(node.PID(), 10*time.Second)
	if err != nil {
		tb.Fatal(err)
	}

	// Sample RSS while every connection replays the whole backlog.
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if r, err := proc.RSS(node.PID()); err == nil && r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	since := storage.PrevID(ids[0])
	start := time.Now()
	var got atomic.Int64
	cerrs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := replayOnce(ctx, node, user, since, ids)
			got.Add(int64(n))
			if err != nil {
				cerrs <- err
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	close(cerrs)
	if err := <-cerrs; err != nil {
		tb.Fatalf("replay: %v", err)
	}
	return replayRun{peakRSS: peak.Load(), baseRSS: base, took: took, messages: got.Load()}
}

// replayOnce connects as user from since and reads until ready, checking
// that it got exactly want, in order.
func replayOnce(ctx context.Context, node *loadgen.Server, user, since string, want []string) (int, error) {
	q := url.Values{"since": {since}, "seen": {""}, "token": {node.Token(user)}}
	c, _, err := websocket.Dial(ctx, node.WS+"?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	n := 0
	for {
		_, p, err := c.Read(ctx)
		if err != nil {
			return n, fmt.Errorf("after %d of %d messages: %w", n, len(want), err)
		}
		var f struct{ Type, ID string }
		if err := json.Unmarshal(p, &f); err != nil {
			return n, err
		}
		switch f.Type {
		case "message":
			if n >= len(want) || f.ID != want[n] {
				return n, fmt.Errorf("message %d is %s, want %s", n, f.ID, want[min(n, len(want)-1)])
			}
			n++
		case "ready":
			if n != len(want) {
				return n, fmt.Errorf("ready after %d of %d messages", n, len(want))
			}
			return n, c.Close(websocket.StatusNormalClosure, "")
		}
	}
}

// postData posts one message of raw JSON data to user and returns its ID.
func postData(ctx context.Context, base, key, user, data string) (string, error) {
	body := fmt.Sprintf(`{"to":[%q],"data":%s,"ttl":"1h"}`, user, data)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/messages", bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST: %d %v", resp.StatusCode, err)
	}
	return r.ID, nil
}

// TestReplaySmoke replays a small backlog of large messages to several
// connections at once: each gets all of them, in order, then ready. (The
// memory figure is BenchmarkReplayMemory's.)
func TestReplaySmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	r := measureReplay(t, 300, 60<<10, 10)
	if r.messages != 300*10 {
		t.Fatalf("%d messages received, want %d", r.messages, 300*10)
	}
	t.Logf("300 x 60 KB to 10 connections: %v, peak RSS %.0f MB (%.0f MB before)", r.took.Round(time.Millisecond),
		float64(r.peakRSS)/(1<<20), float64(r.baseRSS)/(1<<20))
}

// BenchmarkReplayMemory measures the node's peak RSS while -replay-conns
// connections of one user replay -replay-msgs stored messages of
// -replay-bytes each, from an old since, at once (the figure:
// 10,000 x 60 KB to 100 connections, under 300 MB):
//
//	go test -run '^$' -bench BenchmarkReplayMemory -benchtime 1x -timeout 60m ./benchmarks/
func BenchmarkReplayMemory(b *testing.B) {
	for range b.N {
		r := measureReplay(b, *replayMsgs, *replayBytes, *replayConns)
		if want := int64(*replayMsgs) * int64(*replayConns); r.messages != want {
			b.Fatalf("%d messages received, want %d", r.messages, want)
		}
		b.ReportMetric(float64(r.peakRSS)/(1<<20), "peak_rss_MB")
		b.ReportMetric(float64(r.baseRSS)/(1<<20), "before_rss_MB")
		b.ReportMetric(r.took.Seconds(), "replay_s")
		b.ReportMetric(float64(r.messages)*float64(*replayBytes)/r.took.Seconds()/(1<<20), "replay_MB/s")
	}
}
