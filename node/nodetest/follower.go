package nodetest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/edge/client/resume"
)

// Follower is a client that stays connected to a cluster the way a real
// one should: it asks /v1/route where to connect, follows "reconnect"
// hints, resumes from its cursor (since= and seen=) after every
// disconnect, answers resync frames, acks every message, and counts every
// message ID it receives (repeats included: what a client that does not
// drop them would see).
type Follower struct {
	User string
	c    *Cluster
	t    testing.TB

	mu         sync.Mutex
	counts     map[string]int // message ID -> times received
	pos        *resume.State
	resyncs    int
	connects   int
	node       string // the node of the current connection
	lastErr    error
	readyCount int

	log []string // one line per session event, for failure reports

	pin *Node // always connect here, if set

	cancel context.CancelFunc
	done   chan struct{}
}

func (f *Follower) logf(format string, args ...any) {
	f.mu.Lock()
	f.log = append(f.log, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// Log returns the follower's session history.
func (f *Follower) Log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// Follow starts a follower for user; it stops at the end of the test.
func (c *Cluster) Follow(user string) *Follower { return c.follow(user, nil) }

// FollowOn starts a follower for user that always connects to n, whoever
// owns user on the ring.
func (c *Cluster) FollowOn(user string, n *Node) *Follower { return c.follow(user, n) }

func (c *Cluster) follow(user string, pin *Node) *Follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Follower{User: user, c: c, t: c.t, counts: map[string]int{}, pos: resume.New(""), pin: pin, cancel: cancel, done: make(chan struct{})}
	go f.run(ctx)
	c.t.Cleanup(f.Stop)
	return f
}

// Stop disconnects and stops reconnecting.
func (f *Follower) Stop() {
	f.cancel()
	<-f.done
}

func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	hint := ""
	backoff := 20 * time.Millisecond
	for ctx.Err() == nil {
		target := hint
		hint = ""
		if f.pin != nil {
			target = f.pin.WSURL("")
		}
		if target == "" {
			target = f.route()
		}
		if target == "" {
			sleepCtx(ctx, backoff)
			continue
		}
		next, err := f.session(ctx, target)
		f.mu.Lock()
		f.lastErr = err
		f.mu.Unlock()
		if next != "" {
			hint = next
			continue
		}
		sleepCtx(ctx, backoff+time.Duration(rand.IntN(20))*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// route asks a random running node where the user belongs.
func (f *Follower) route() string {
	nodes := f.c.Nodes()
	if len(nodes) == 0 {
		return ""
	}
	n := nodes[rand.IntN(len(nodes))]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := newRequest(ctx, n.URL()+"/v1/route?user="+url.QueryEscape(f.User))
	resp, err := httpClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var v struct{ URL string }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		return ""
	}
	return v.URL
}

// session runs one connection until it ends; it returns the URL of a
// reconnect hint, if the server gave one.
func (f *Follower) session(ctx context.Context, target string) (string, error) {
	u, err := url.Parse(target)
	if err != nil {
		return "", err
	}
	q := u.Query()
	f.mu.Lock()
	for k, v := range f.pos.Query() {
		q[k] = v
	}
	f.mu.Unlock()
	q.Set("token", f.c.token(f.User))
	f.logf("dial %s since=%s seen=%s", u.Host, q.Get("since"), q.Get("seen"))
	u.RawQuery = q.Encode()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, _, err := websocket.Dial(dctx, u.String(), nil)
	cancel()
	if err != nil {
		return "", err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(8 << 20)
	f.mu.Lock()
	f.connects++
	f.mu.Unlock()
	hint := ""
	for {
		_, p, err := conn.Read(ctx)
		if err != nil {
			f.logf("session ended: %v", err)
			return hint, err
		}
		var fr Frame
		if err := json.Unmarshal(p, &fr); err != nil {
			return hint, err
		}
		switch fr.Type {
		case "message":
			f.logf("msg %s cursor=%s", fr.ID, fr.Cursor)
			f.mu.Lock()
			f.counts[fr.ID]++
			f.pos.Message(fr.ID, fr.Cursor)
			f.mu.Unlock()
			ack, _ := json.Marshal(map[string]string{"type": "ack", "id": fr.ID})
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = conn.Write(wctx, websocket.MessageText, ack)
			cancel()
		case "ready":
			f.logf("ready node=%s replayed=%d cursor=%s", fr.Node, fr.Replayed, fr.Cursor)
			f.mu.Lock()
			f.pos.Ready(fr.Cursor)
			f.node = fr.Node
			f.readyCount++
			f.mu.Unlock()
		case "resync":
			f.mu.Lock()
			r := f.pos.Resume()
			f.resyncs++
			f.mu.Unlock()
			f.logf("resync: resume since=%s seen=%v", r.Since, r.Seen)
			p, _ := json.Marshal(r)
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = conn.Write(wctx, websocket.MessageText, p)
			cancel()
		case "reconnect":
			f.logf("reconnect hint=%s delay=%d", fr.URL, fr.DelayMS)
			hint = fr.URL
			// Honour the server's spread, capped to keep tests quick.
			sleepCtx(ctx, min(time.Duration(fr.DelayMS)*time.Millisecond, 200*time.Millisecond))
		}
	}
}

// Node returns the node of the current (or last) connection.
func (f *Follower) Node() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.node
}

// Ready waits until the follower has been ready n times in total.
func (f *Follower) Ready(n int) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		got, err := f.readyCount, f.lastErr
		f.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: ready %d times, want %d (last error: %v)", f.User, got, n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Missing returns which of ids the follower has not received.
func (f *Follower) Missing(ids []string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, id := range ids {
		if f.counts[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// Duplicates returns how many extra copies the follower received.
func (f *Follower) Duplicates() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.counts {
		n += c - 1
	}
	return n
}

// Resyncs returns how many resync frames the follower answered.
func (f *Follower) Resyncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resyncs
}

// Connects returns how many connections the follower made.
func (f *Follower) Connects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects
}

// WaitAll waits until the follower received every one of ids.
func (f *Follower) WaitAll(ids []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := f.Missing(ids)
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			sort.Strings(missing)
			f.mu.Lock()
			err := f.lastErr
			f.mu.Unlock()
			return fmt.Errorf("%s missed %d of %d messages (e.g. %v; last error %v)", f.User, len(missing), len(ids), missing[:min(3, len(missing))], err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
