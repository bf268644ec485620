package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/edge/client/resume"
	"github.com/heraldpush/herald/node/auth"
)

// device is one client connection of a user, behaving as the JS client
// does: it asks a node where the user belongs, resumes from its cursor
// (since= and seen=), answers resync frames, follows reconnect hints,
// acks every message, drops repeats for the application but counts every
// receipt (a client that does not drop them would see them all), and
// reconnects with jittered backoff.
type device struct {
	user string
	d    *Drill

	mu       sync.Mutex
	pos      *resume.State
	got      map[string]int       // message ID -> receipts
	first    map[string]time.Time // message ID -> first receipt
	connects []time.Time
	resyncs  []time.Time
	readies  int
	stallTil time.Time       // the reader stops reading until then
	conn     *websocket.Conn // the current connection
	lastErr  error
	hint     string
	events   []string // the latest connection events, to explain a loss

	done chan struct{}
}

func newDevice(d *Drill, user string) *device {
	return &device{user: user, d: d, pos: resume.New(""), got: map[string]int{}, first: map[string]time.Time{}, done: make(chan struct{})}
}

func (v *device) run(ctx context.Context) {
	defer close(v.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		v.mu.Lock()
		target := v.hint
		v.hint = ""
		v.mu.Unlock()
		if target == "" {
			target = v.route(ctx)
		}
		if target == "" {
			sleep(ctx, jitter(backoff))
			backoff = min(2*backoff, time.Second)
			continue
		}
		err := v.session(ctx, target)
		v.mu.Lock()
		v.lastErr = err
		hinted := v.hint != ""
		v.mu.Unlock()
		if hinted {
			backoff = 50 * time.Millisecond
			continue
		}
		sleep(ctx, jitter(backoff))
		backoff = min(2*backoff, time.Second)
	}
}

// maxEvents bounds a device's event log.
const maxEvents = 400

// eventLocked records a connection event.
func (v *device) eventLocked(format string, args ...any) {
	v.events = append(v.events, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	if len(v.events) > maxEvents {
		v.events = v.events[len(v.events)-maxEvents:]
	}
}

func jitter(d time.Duration) time.Duration { return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// route asks a random running node where the user belongs.
func (v *device) route(ctx context.Context) string {
	nodes := v.d.cluster.running()
	if len(nodes) == 0 {
		return ""
	}
	n := nodes[rand.IntN(len(nodes))]
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, n.URL+"/v1/route?user="+url.QueryEscape(v.user), nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r struct{ URL string }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&r) != nil {
		return ""
	}
	return r.URL
}

// session runs one connection until it ends.
func (v *device) session(ctx context.Context, target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	q := u.Query()
	v.mu.Lock()
	for k, vals := range v.pos.Query() {
		q[k] = vals
	}
	v.eventLocked("dial %s since=%s seen=%d", u.Host, v.pos.Cursor(), len(v.pos.Seen()))
	v.mu.Unlock()
	tok, err := auth.Mint([]byte(v.d.cluster.jwt), v.user, time.Hour)
	if err != nil {
		return err
	}
	q.Set("token", tok)
	u.RawQuery = q.Encode()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, _, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{HTTPClient: smallBuffers})
	cancel()
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(8 << 20)
	v.mu.Lock()
	v.conn = conn
	v.connects = append(v.connects, time.Now())
	v.mu.Unlock()
	var ended error
	defer func() {
		v.mu.Lock()
		v.conn = nil
		v.eventLocked("closed: %v", ended)
		v.mu.Unlock()
	}()
	for {
		v.mu.Lock()
		stall := time.Until(v.stallTil)
		v.mu.Unlock()
		if stall > 0 {
			sleep(ctx, stall) // a slow consumer: the server's queue for it fills
		}
		_, p, err := conn.Read(ctx)
		if err != nil {
			ended = err
			return err
		}
		var f struct {
			Type    string `json:"type"`
			ID      string `json:"id"`
			Cursor  string `json:"cursor"`
			URL     string `json:"url"`
			DelayMS int64  `json:"delay_ms"`
		}
		if err := json.Unmarshal(p, &f); err != nil {
			return err
		}
		switch f.Type {
		case "message":
			now := time.Now()
			v.mu.Lock()
			v.got[f.ID]++
			if _, ok := v.first[f.ID]; !ok {
				v.first[f.ID] = now
			}
			v.pos.Message(f.ID, f.Cursor)
			v.mu.Unlock()
			v.write(ctx, conn, map[string]string{"type": "ack", "id": f.ID})
		case "ready":
			v.mu.Lock()
			v.eventLocked("ready cursor=%s", f.Cursor)
			v.pos.Ready(f.Cursor)
			v.readies++
			v.mu.Unlock()
		case "resync":
			v.mu.Lock()
			r := v.pos.Resume()
			v.eventLocked("resync: resume since=%s seen=%d", r.Since, len(r.Seen))
			v.resyncs = append(v.resyncs, time.Now())
			v.mu.Unlock()
			v.write(ctx, conn, r)
		case "reconnect":
			v.mu.Lock()
			v.hint = f.URL
			v.mu.Unlock()
			sleep(ctx, min(time.Duration(f.DelayMS)*time.Millisecond, 500*time.Millisecond))
		}
	}
}

func (v *device) write(ctx context.Context, conn *websocket.Conn, msg any) {
	p, _ := json.Marshal(msg)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = conn.Write(wctx, websocket.MessageText, p)
}

// drop closes the current connection, as a network blip would.
func (v *device) drop() {
	v.mu.Lock()
	c := v.conn
	v.mu.Unlock()
	if c != nil {
		c.CloseNow()
	}
}

// stall makes the device stop reading for d.
func (v *device) stall(d time.Duration) {
	v.mu.Lock()
	v.stallTil = time.Now().Add(d)
	v.mu.Unlock()
}

// has reports whether the device received id.
func (v *device) has(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.got[id] > 0
}

// readyCount returns how many ready frames the device has had.
func (v *device) readyCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.readies
}

// ready reports whether the device has been ready at least once.
func (v *device) isReady() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.readies > 0
}

var errNotReady = errors.New("devices not ready")

// smallBuffers dials with a small socket receive buffer, as a phone on a
// slow network has: a device that stops reading fills its server-side
// queue after a few hundred kilobytes, not after the kernel's megabytes.
var smallBuffers = &http.Client{Transport: &http.Transport{
	DialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10)
		}); err != nil {
			return err
		}
		return serr
	}}).DialContext,
}}
