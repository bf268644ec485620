package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config configures a drill.
type Config struct {
	// Herald is herald built with -tags chaos; DevMongo is
	// herald-devmongo; RedisServer is redis-server. Required.
	Herald, DevMongo, RedisServer string
	// Dir holds the processes' data and logs. Required.
	Dir string
	// Nodes is the number of Herald nodes, each with every role (3).
	Nodes int
	// Users and Devices: Users users, the first Devices-Users of which
	// have a second device (connection). Devices >= Users.
	Users, Devices int
	// Rate is the messages posted per second, spread over the nodes; one
	// in BroadcastEvery is a broadcast (0: none).
	Rate           float64
	BroadcastEvery int
	// Faults are run in order (names from FaultNames), one at a time;
	// "random" runs random faults until Duration has passed: each time
	// one, or two of different kinds at once (a node fault with a Redis
	// or store fault, or with a client fault...), with a freeze of 1 s to
	// FreezeMax.
	Faults   []string
	Duration time.Duration
	// Freeze is how long a frozen node stays frozen in a fault run by
	// name (5 s); FreezeMax bounds the random ones (15 s).
	Freeze, FreezeMax time.Duration
	// Settle bounds the wait, after each fault heals, for every message
	// accepted until then to reach every device (60 s).
	Settle time.Duration
	// Seed seeds the random choices (0: random).
	Seed uint64
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// FaultNames lists the faults a drill knows, in the order of a full run.
var FaultNames = []string{"freeze", "kill", "rolling", "skew", "redis-kill", "redis-flush", "mongo-kill", "partition", "slow", "storm"}

// faultKinds groups the faults by what they break; a random round mixes
// at most one of each kind, so that two faults never fight over a node.
var faultKinds = map[string]string{
	"freeze": "node", "kill": "node", "rolling": "node", "skew": "node", "partition": "node",
	"redis-kill": "infra", "redis-flush": "infra", "mongo-kill": "infra",
	"slow": "clients", "storm": "clients",
}

// pickFaults draws a random round: one fault, or two of different kinds.
func pickFaults(rng *rand.Rand) []string {
	first := FaultNames[rng.IntN(len(FaultNames))]
	if rng.IntN(2) == 0 {
		return []string{first}
	}
	for {
		second := FaultNames[rng.IntN(len(FaultNames))]
		if faultKinds[second] != faultKinds[first] {
			return []string{first, second}
		}
	}
}

// FaultReport is what one fault did.
type FaultReport struct {
	Name     string        `json:"name"`
	Detail   string        `json:"detail"`
	Start    time.Time     `json:"start"`
	Healed   time.Time     `json:"healed"`
	Lasted   time.Duration `json:"lasted_ns"`
	Accepted int           `json:"accepted"` // posts accepted from the fault's start until everything accepted by the heal was delivered
	Lost     int           `json:"lost"`     // deliveries of those messages that never arrived
	// Duplicates are receipts beyond the first, by every device, of the
	// messages accepted from the fault's start until all were delivered:
	// what a client that does not drop repeats would see.
	Duplicates int `json:"duplicates"`
	Deliveries int `json:"deliveries"` // the deliveries those messages owed
	// DeliveredAfter is how long after the heal every message accepted
	// until then had reached every device (-1: not within Settle).
	DeliveredAfter time.Duration `json:"delivered_after_ns"`
	// QuietAfter is how long after that the cluster had finished
	// recovering (no replay queued or running, no append unsettled, its
	// cursors current): the next fault starts then (-1: not within 2 min).
	QuietAfter time.Duration `json:"quiet_after_ns"`
	Reconnects int           `json:"reconnects"` // connections opened meanwhile by the devices
	Resyncs    int           `json:"resyncs"`    // resyncs answered meanwhile
	Refused    int           `json:"refused"`    // posts no node accepted, after retries
}

// Report is a drill's outcome.
type Report struct {
	Nodes, Users, Devices int
	Rate                  float64
	Seed                  uint64
	Started               time.Time
	Took                  time.Duration `json:"took_ns"`
	Accepted              int
	Deliveries            int // the deliveries the accepted messages owed
	Lost                  int
	Duplicates            int
	Refused               int
	Faults                []FaultReport
	// LostSamples explains up to 5 lost deliveries: the message, and the
	// device's connection events.
	LostSamples []string `json:",omitempty"`
}

// accepted is one message a node accepted.
type accepted struct {
	id    string
	user  string // "" for a broadcast
	at    time.Time
	fault int // index of the fault under way, -1 between faults
}

// Drill is a running drill.
type Drill struct {
	cfg     Config
	cluster *Cluster
	devices []*device
	byUser  map[string][]*device
	rng     *rand.Rand

	mu       sync.Mutex
	accepted []accepted
	refused  []time.Time
	current  int // fault under way, -1 for none
	posted   atomic.Int64
}

func (d *Drill) logf(format string, args ...any) {
	if d.cfg.Log != nil {
		fmt.Fprintf(d.cfg.Log, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
	}
}

// Run starts the cluster and the clients, runs the faults, and reports.
// It fails only if the drill could not run; lost messages are in the
// report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Users == 0 {
		cfg.Users = 100
	}
	cfg.Devices = max(cfg.Devices, cfg.Users)
	if cfg.Freeze == 0 {
		cfg.Freeze = 5 * time.Second
	}
	if cfg.FreezeMax == 0 {
		cfg.FreezeMax = 15 * time.Second
	}
	if cfg.Settle == 0 {
		cfg.Settle = 60 * time.Second
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	d := &Drill{cfg: cfg, byUser: map[string][]*device{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), current: -1}
	d.logf("chaos drill: %d nodes, %d users, %d devices, %.0f msg/s, seed %d", cfg.Nodes, cfg.Users, cfg.Devices, cfg.Rate, seed)
	c, err := startCluster(ctx, &d.cfg)
	if err != nil {
		return nil, err
	}
	d.cluster = c
	defer c.stop()
	dctx, stopDevices := context.WithCancel(ctx)
	defer func() {
		stopDevices()
		for _, v := range d.devices {
			<-v.done
		}
	}()
	for i := range cfg.Devices {
		user := fmt.Sprintf("chaos-%03d", i%cfg.Users)
		v := newDevice(d, user)
		d.devices = append(d.devices, v)
		d.byUser[user] = append(d.byUser[user], v)
		go v.run(dctx)
	}
	if err := d.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	report := &Report{Nodes: cfg.Nodes, Users: cfg.Users, Devices: cfg.Devices, Rate: cfg.Rate, Seed: seed, Started: time.Now()}
	pctx, stopProducers := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() { defer pwg.Done(); d.produce(pctx) }()
	// Traffic flows a moment before the first fault.
	sleep(ctx, 2*time.Second)
	faults := cfg.Faults
	deadline := time.Now().Add(cfg.Duration)
	random := len(faults) == 1 && faults[0] == "random"
	for i := 0; ctx.Err() == nil; i++ {
		var round []string
		switch {
		case random && time.Now().Before(deadline):
			round = pickFaults(d.rng)
		case !random && i < len(faults):
			round = []string{faults[i]}
		}
		if len(round) == 0 {
			break
		}
		fr, err := d.fault(ctx, len(report.Faults), round, random)
		if err != nil {
			stopProducers()
			pwg.Wait()
			return nil, fmt.Errorf("fault %s: %w", fr.Name, err)
		}
		report.Faults = append(report.Faults, fr)
	}
	stopProducers()
	pwg.Wait()
	d.mu.Lock()
	d.current = -1
	d.mu.Unlock()
	// Everything accepted reaches every device, or is lost.
	d.waitDelivered(ctx, time.Now(), cfg.Settle)
	d.tally(report)
	report.Took = time.Since(report.Started)
	return report, nil
}

// waitReady waits until every device has connected once.
func (d *Drill) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, v := range d.devices {
			if v.isReady() {
				n++
			}
		}
		if n == len(d.devices) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d of %d connected", errNotReady, n, len(d.devices))
		}
		sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// produce posts at cfg.Rate until ctx ends.
func (d *Drill) produce(ctx context.Context) {
	rng := rand.New(rand.NewPCG(d.rng.Uint64(), 1)) // its own: d.rng belongs to the fault runner
	every := time.Duration(float64(time.Second) / max(d.cfg.Rate, 1))
	t := time.NewTicker(every)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		user := fmt.Sprintf("chaos-%03d", rng.IntN(d.cfg.Users))
		if d.cfg.BroadcastEvery > 0 && i%d.cfg.BroadcastEvery == d.cfg.BroadcastEvery-1 {
			user = ""
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.post(ctx, user, fmt.Sprintf(`{"n":%d}`, i))
		}()
	}
}

// post sends one message (to user, or a broadcast for ""), retrying with
// the same idempotency key on other nodes, as a careful backend does.
//
// Messages live 2 minutes, longer than any fault and its settle time: the
// store (FerretDB, which scans its table for every replay) then stays
// the same size however long the drill runs.
func (d *Drill) post(ctx context.Context, user, data string) {
	d.postTTL(ctx, user, data, "2m")
}

// postTTL is post with a ttl ("" for the default).
func (d *Drill) postTTL(ctx context.Context, user, data, ttl string) {
	key := fmt.Sprintf("chaos-%d", d.posted.Add(1))
	body := map[string]any{"data": json.RawMessage(data), "key": key}
	if ttl != "" {
		body["ttl"] = ttl
	}
	if user == "" {
		body["broadcast"] = true
	} else {
		body["to"] = []string{user}
	}
	raw, _ := json.Marshal(body)
	deadline := time.Now().Add(20 * time.Second)
	wait := 50 * time.Millisecond
	for ctx.Err() == nil && time.Now().Before(deadline) {
		nodes := d.cluster.running()
		if len(nodes) > 0 {
			n := nodes[rand.IntN(len(nodes))]
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.URL+"/v1/messages", bytes.NewReader(raw))
			req.Header.Set("Authorization", "Bearer "+d.cluster.apiKey)
			resp, err := httpClient.Do(req)
			if err == nil {
				var r struct {
					ID string `json:"id"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted && r.ID != "" {
					d.mu.Lock()
					d.accepted = append(d.accepted, accepted{id: r.ID, user: user, at: time.Now(), fault: d.current})
					d.mu.Unlock()
					return
				}
			}
		}
		sleep(ctx, jitter(wait))
		wait = min(2*wait, time.Second)
	}
	if ctx.Err() == nil {
		d.mu.Lock()
		d.refused = append(d.refused, time.Now())
		d.mu.Unlock()
	}
}

// owed returns, for a message, the devices that must get it.
func (d *Drill) owed(a accepted) []*device {
	if a.user == "" {
		return d.devices
	}
	return d.byUser[a.user]
}

// missing counts the deliveries of messages accepted before t that have
// not arrived.
func (d *Drill) missing(t time.Time) int {
	d.mu.Lock()
	msgs := make([]accepted, 0, len(d.accepted))
	for _, a := range d.accepted {
		if !a.at.After(t) {
			msgs = append(msgs, a)
		}
	}
	d.mu.Unlock()
	n := 0
	for _, a := range msgs {
		for _, v := range d.owed(a) {
			if !v.has(a.id) {
				n++
			}
		}
	}
	return n
}

// waitDelivered waits until every message accepted before t has reached
// every device, up to timeout; it returns how long that took (-1: not
// within timeout).
func (d *Drill) waitDelivered(ctx context.Context, t time.Time, timeout time.Duration) time.Duration {
	deadline := time.Now().Add(timeout)
	for {
		if d.missing(t) == 0 {
			return time.Since(t)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return -1
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

// latest describes the n deliveries, of messages accepted before t, that
// arrived last: for finding out what took long.
func (d *Drill) latest(t time.Time, n int) string {
	d.mu.Lock()
	msgs := make([]accepted, 0, len(d.accepted))
	for _, a := range d.accepted {
		if !a.at.After(t) {
			msgs = append(msgs, a)
		}
	}
	d.mu.Unlock()
	type late struct {
		a    accepted
		user string
		at   time.Time
	}
	var all []late
	for _, a := range msgs {
		for i, v := range d.owed(a) {
			v.mu.Lock()
			at := v.first[a.id]
			v.mu.Unlock()
			if at.After(t) {
				all = append(all, late{a, fmt.Sprintf("%s#%d", v.user, i), at})
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.After(all[j].at) })
	var out []string
	for _, l := range all[:min(n, len(all))] {
		out = append(out, fmt.Sprintf("%s to %s accepted %s received %s", l.a.id, l.user, l.a.at.Format("15:04:05.000"), l.at.Format("15:04:05.000")))
	}
	return strings.Join(out, "; ")
}

// fault runs the faults of one round, at once, and reports on them.
func (d *Drill) fault(ctx context.Context, idx int, names []string, random bool) (FaultReport, error) {
	name := strings.Join(names, "+")
	fr := FaultReport{Name: name, Start: time.Now()}
	d.mu.Lock()
	d.current = idx
	d.mu.Unlock()
	d.logf("fault %d: %s", idx, name)
	details := make([]string, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		rng := rand.New(rand.NewPCG(d.rng.Uint64(), uint64(i))) // each its own
		freeze := d.cfg.Freeze
		if random {
			freeze = time.Second + time.Duration(rng.Int64N(int64(max(d.cfg.FreezeMax-time.Second, 1))))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			details[i], errs[i] = d.inject(ctx, n, rng, freeze)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fr, err
	}
	fr.Detail = strings.Join(details, "; ")
	fr.Healed = time.Now()
	fr.Lasted = fr.Healed.Sub(fr.Start)
	fr.DeliveredAfter = d.waitDelivered(ctx, fr.Healed, d.cfg.Settle)
	// What was accepted while the cluster recovered counts for the fault.
	d.mu.Lock()
	d.current = -1
	d.mu.Unlock()
	// The next fault starts on a calm cluster, so that each one's effects
	// are its own; reconnects and resyncs count until then.
	q, err := d.cluster.quiet(ctx, 2*time.Minute)
	fr.QuietAfter = q
	if cerr := d.cluster.crashed(); cerr != nil {
		return fr, cerr // a crash is a bug, not a fault the drill injected
	}
	if err != nil {
		fr.QuietAfter = -1
		d.logf("fault %d: %v", idx, err)
	}
	end := time.Now()
	if fr.DeliveredAfter > 3*time.Second {
		d.logf("fault %d: the latest deliveries: %s", idx, d.latest(fr.Healed, 3))
	}
	d.mu.Lock()
	for _, a := range d.accepted {
		if a.fault == idx {
			fr.Accepted++
		}
	}
	for _, r := range d.refused {
		if !r.Before(fr.Start) && !r.After(end) {
			fr.Refused++
		}
	}
	d.mu.Unlock()
	for _, v := range d.devices {
		v.mu.Lock()
		for _, t := range v.connects {
			if !t.Before(fr.Start) && !t.After(end) {
				fr.Reconnects++
			}
		}
		for _, t := range v.resyncs {
			if !t.Before(fr.Start) && !t.After(end) {
				fr.Resyncs++
			}
		}
		v.mu.Unlock()
	}
	d.logf("fault %d: %s healed after %v (%s); all delivered %v later, quiet %v after that; %d reconnects, %d resyncs",
		idx, name, fr.Lasted.Round(time.Millisecond), fr.Detail, fr.DeliveredAfter.Round(time.Millisecond), fr.QuietAfter.Round(time.Millisecond), fr.Reconnects, fr.Resyncs)
	return fr, nil
}

// inject runs one fault, from injection to heal.
func (d *Drill) inject(ctx context.Context, name string, rng *rand.Rand, freeze time.Duration) (string, error) {
	c := d.cluster
	nodes := c.nodes
	pick := nodes[rng.IntN(len(nodes))]
	switch name {
	case "freeze":
		pick.p.signal(syscall.SIGSTOP)
		sleep(ctx, freeze)
		pick.p.signal(syscall.SIGCONT)
		return fmt.Sprintf("%s frozen %v", pick.ID, freeze.Round(100*time.Millisecond)), nil
	case "kill":
		pick.p.stop(syscall.SIGKILL, 5*time.Second)
		sleep(ctx, time.Second)
		if err := c.restart(ctx, pick); err != nil {
			return "", err
		}
		return pick.ID + " killed (-9) and restarted", c.converge(ctx, 30*time.Second)
	case "rolling":
		for _, n := range nodes {
			n.p.stop(syscall.SIGTERM, 30*time.Second)
			if err := c.restart(ctx, n); err != nil {
				return "", err
			}
			if err := c.converge(ctx, 30*time.Second); err != nil {
				return "", err
			}
		}
		return "SIGTERM and restart of every node in turn", nil
	case "skew":
		for _, off := range []time.Duration{5 * time.Second, -5 * time.Second} {
			if err := c.chaos(pick, nil, off); err != nil {
				return "", err
			}
			sleep(ctx, 4*time.Second)
		}
		return pick.ID + "'s ID clock +5 s then -5 s", c.chaos(pick, nil, 0)
	case "redis-kill":
		c.redis.stop(syscall.SIGKILL, 5*time.Second)
		sleep(ctx, 3*time.Second)
		if err := c.redis.start(); err != nil {
			return "", err
		}
		return "redis-server killed (-9) for 3 s, restarted empty", waitTCP(ctx, c.redisAddr)
	case "redis-flush":
		return "FLUSHALL", c.flushRedis(ctx)
	case "mongo-kill":
		c.mongo.stop(syscall.SIGKILL, 5*time.Second)
		sleep(ctx, 3*time.Second)
		if err := c.mongo.start(); err != nil {
			return "", err
		}
		return "the MongoDB-wire server killed (-9) for 3 s, restarted", waitTCP(ctx, c.mongoAddr)
	case "partition":
		var others []string
		for _, n := range nodes {
			if n != pick {
				others = append(others, n.IP)
				if err := c.chaos(n, []string{pick.IP}, 0); err != nil {
					return "", err
				}
			}
		}
		if err := c.chaos(pick, others, 0); err != nil {
			return "", err
		}
		sleep(ctx, 6*time.Second)
		for _, n := range nodes {
			if err := c.chaos(n, nil, 0); err != nil {
				return "", err
			}
		}
		return pick.ID + " cut off from the other nodes (gossip and RPC) for 6 s", c.converge(ctx, 30*time.Second)
	case "slow":
		k := 2
		users := map[string]bool{}
		for _, i := range rng.Perm(len(d.devices))[:k] {
			v := d.devices[i]
			v.stall(6 * time.Second)
			users[v.user] = true
		}
		// Big messages for them, so that their queues (256 KiB in a drill,
		// behind the sockets' buffers) overflow; short-lived, so that they
		// do not weigh on the store's scans for long.
		var wg sync.WaitGroup
		big := `"` + strings.Repeat("x", 16<<10) + `"`
		for u := range users {
			for range 64 {
				wg.Add(1)
				go func() { defer wg.Done(); d.postTTL(ctx, u, big, "45s") }()
			}
		}
		wg.Wait()
		sleep(ctx, 4*time.Second)
		return fmt.Sprintf("%d devices stop reading for 6 s while 1 MB is sent to each", k), nil
	case "storm":
		before := make([]int, len(d.devices))
		for i, v := range d.devices {
			before[i] = v.readyCount()
		}
		for _, v := range d.devices {
			v.drop()
		}
		// It heals once every device is connected again.
		start := time.Now()
		for ctx.Err() == nil {
			back := 0
			for i, v := range d.devices {
				if v.readyCount() > before[i] {
					back++
				}
			}
			if back == len(d.devices) {
				break
			}
			if time.Since(start) > 60*time.Second {
				return "", fmt.Errorf("%w: %d of %d reconnected within 60 s of a storm", errNotReady, back, len(d.devices))
			}
			sleep(ctx, 20*time.Millisecond)
		}
		return fmt.Sprintf("all %d devices dropped their connection at once, and reconnected in %v",
			len(d.devices), time.Since(start).Round(10*time.Millisecond)), nil
	}
	return "", fmt.Errorf("unknown fault %q (want one of %s, or random)", name, strings.Join(FaultNames, ", "))
}

// tally fills in the report's counts.
func (d *Drill) tally(r *Report) {
	d.mu.Lock()
	msgs := append([]accepted(nil), d.accepted...)
	r.Refused = len(d.refused)
	d.mu.Unlock()
	r.Accepted = len(msgs)
	for _, a := range msgs {
		for _, v := range d.owed(a) {
			r.Deliveries++
			v.mu.Lock()
			n := v.got[a.id]
			v.mu.Unlock()
			lost := 0
			if n == 0 {
				lost = 1
				if len(r.LostSamples) < 5 {
					v.mu.Lock()
					r.LostSamples = append(r.LostSamples, fmt.Sprintf("%s (%s, accepted %s) never reached %s; its events:\n  %s",
						a.id, map[bool]string{true: "broadcast", false: "to " + a.user}[a.user == ""], a.at.Format("15:04:05.000"),
						v.user, strings.Join(v.events, "\n  ")))
					v.mu.Unlock()
				}
			}
			r.Lost += lost
			r.Duplicates += max(n-1, 0)
			if a.fault >= 0 && a.fault < len(r.Faults) {
				f := &r.Faults[a.fault]
				f.Deliveries++
				f.Lost += lost
				f.Duplicates += max(n-1, 0)
			}
		}
	}
}

// String formats a report as a table.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos drill: %d nodes, %d users, %d devices, %.0f msg/s, seed %d, %v\n", r.Nodes, r.Users, r.Devices, r.Rate, r.Seed, r.Took.Round(time.Second))
	fmt.Fprintf(&b, "%-12s %9s %10s %5s %10s %12s %9s %10s %7s  %s\n", "fault", "accepted", "deliveries", "lost", "duplicates", "delivered in", "quiet in", "reconnects", "resyncs", "what")
	faults := append([]FaultReport(nil), r.Faults...)
	sort.SliceStable(faults, func(i, j int) bool { return faults[i].Start.Before(faults[j].Start) })
	for _, f := range faults {
		in := "never"
		if f.DeliveredAfter >= 0 {
			in = f.DeliveredAfter.Round(10 * time.Millisecond).String()
		}
		quiet := "never"
		if f.QuietAfter >= 0 {
			quiet = f.QuietAfter.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%-12s %9d %10d %5d %10d %12s %9s %10d %7d  %s\n", f.Name, f.Accepted, f.Deliveries, f.Lost, f.Duplicates, in, quiet, f.Reconnects, f.Resyncs, f.Detail)
	}
	for _, l := range r.LostSamples {
		fmt.Fprintf(&b, "LOST: %s\n", l)
	}
	fmt.Fprintf(&b, "total: %d accepted, %d deliveries owed, %d lost, %d duplicates on the wire (%.2f%%), %d posts refused after retries\n",
		r.Accepted, r.Deliveries, r.Lost, r.Duplicates, 100*float64(r.Duplicates)/float64(max(r.Deliveries, 1)), r.Refused)
	return b.String()
}
