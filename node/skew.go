package node

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// ServerClock is implemented by stores that can tell their server's time
// (MongoDB's hello, Redis's TIME), so the node can measure its own clock
// against theirs.
type ServerClock interface {
	// ServerTime returns the server's clock, read once.
	ServerTime(ctx context.Context) (time.Time, error)
}

// skewCheck measures, every skewEvery, this node's clock against the
// message store's and the binding store's (those that implement
// ServerClock), as the difference between the local midpoint of the
// round trip and the server's reading. /readyz fails while either
// exceeds MaxClockSkew (docs/DECISIONS.md says why).
type skewCheck struct {
	n *Node

	mu   sync.Mutex
	last map[string]time.Duration
}

const skewEvery = 10 * time.Second

func (k *skewCheck) start() {
	if k.n.cfg.MaxClockSkew <= 0 {
		return
	}
	k.n.bg.Add(1)
	go func() {
		defer k.n.bg.Done()
		k.measure()
		t := time.NewTicker(skewEvery)
		defer t.Stop()
		for {
			select {
			case <-k.n.stop:
				return
			case <-t.C:
				k.measure()
			}
		}
	}()
}

func (k *skewCheck) measure() {
	now := time.Now
	if k.n.cfg.Clock != nil {
		now = k.n.cfg.Clock
	}
	for name, store := range map[string]any{"messages": k.n.cfg.Messages, "bindings": k.n.cfg.Bindings} {
		sc, ok := store.(ServerClock)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		before := now()
		server, err := sc.ServerTime(ctx)
		after := now()
		cancel()
		if err != nil {
			continue // an outage shows elsewhere; keep the last reading
		}
		skew := before.Add(after.Sub(before) / 2).Sub(server)
		k.n.metrics.clockSkew.WithLabelValues(name).Set(skew.Seconds())
		k.mu.Lock()
		if k.last == nil {
			k.last = make(map[string]time.Duration)
		}
		prev, seen := k.last[name]
		k.last[name] = skew
		k.mu.Unlock()
		if abs(skew) > k.n.cfg.MaxClockSkew && (!seen || abs(prev) <= k.n.cfg.MaxClockSkew) {
			k.n.log.Warn("this node's clock is off; not ready until it is fixed", "store", name, "skew", skew.Round(time.Millisecond), "max", k.n.cfg.MaxClockSkew)
		}
	}
}

// problem names a skew beyond MaxClockSkew, or is "".
func (k *skewCheck) problem() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, s := range k.last {
		if abs(s) > k.n.cfg.MaxClockSkew {
			return fmt.Sprintf("clock differs from the %s store's by %v (at most %v)", name, s.Round(time.Millisecond), k.n.cfg.MaxClockSkew)
		}
	}
	return ""
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
