package loadgen

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/benchmarks/proc"
)

// Scenario names.
const (
	Idle      = "idle"
	Unicast   = "unicast"
	Broadcast = "broadcast"
	Churn     = "churn"
	Cluster   = "cluster"
)

// Params describe one run.
type Params struct {
	Scenario    string        `json:"scenario"`
	Target      string        `json:"target"` // herald, or a baseline library
	Conns       int           `json:"conns"`
	ConnectRate float64       `json:"connect_rate"` // connections per second, all workers together (0: as fast as possible)
	Duration    time.Duration `json:"duration_ns"`  // idle measuring time; unicast/churn/cluster sending time
	Rate        float64       `json:"rate"`         // unicast messages per second
	Broadcasts  int           `json:"broadcasts"`   // broadcast and cluster: how many
	ChurnEvery  time.Duration `json:"churn_every_ns"`
	ChurnShare  float64       `json:"churn_share"` // fraction of clients that reconnect each ChurnEvery
	Nodes       int           `json:"nodes"`       // cluster: Herald nodes
	Workers     int           `json:"workers"`     // worker processes; 0: in-process up to PerWorker, else one per PerWorker
	Ack         bool          `json:"ack"`
	Keys        bool          `json:"keys"` // Herald messages carry an idempotency key
	HeraldArgs  []string      `json:"herald_args,omitempty"`
	URLs        []string      `json:"urls,omitempty"`        // running servers to measure (then the tool starts none)
	SourceIPs   []string      `json:"source_ips,omitempty"`  // client source addresses (default: 127.0.0.2... for loopback targets)
	UserPrefix  string        `json:"user_prefix,omitempty"` // user IDs are prefix + 0..Conns-1 (default "user-")
	JWTSecret   string        `json:"-"`                     // with URLs: the servers' token secret
	APIKey      string        `json:"-"`                     // with URLs: the servers' API key

	HeraldBin   string `json:"-"`
	BaselineBin string `json:"-"`
	DevMongoBin string `json:"-"`
	Self        string `json:"-"` // this binary, for worker processes
	Dir         string `json:"-"` // scratch directory
	ProfileDir  string `json:"-"` // if set, pprof CPU and heap profiles of the Herald nodes go here
}

// Result is one run's JSON document.
type Result struct {
	Scenario    string             `json:"scenario"`
	Target      string             `json:"target"`
	Params      Params             `json:"params"`
	Machine     Machine            `json:"machine"`
	GoVersion   string             `json:"go_version"`
	Git         string             `json:"git_revision"`
	Started     time.Time          `json:"started"`
	Seconds     float64            `json:"seconds"`
	Figures     map[string]float64 `json:"figures"`
	Expected    int64              `json:"expected_deliveries"`
	Delivered   int64              `json:"delivered"`
	Lost        int64              `json:"lost"`
	Duplicates  int64              `json:"duplicates"`
	LostSamples []string           `json:"lost_samples,omitempty"`
	Profiles    []string           `json:"profiles,omitempty"` // pprof files in the profile directory
	Notes       []string           `json:"notes,omitempty"`
}

// run is the state of one run.
type run struct {
	p        Params
	out      io.Writer
	res      *Result
	servers  []*Server
	workers  []Worker
	users    []string
	byWorker [][]string
	toolBase int64 // load tool RSS with the workers started, before connecting
	cleanups []func()
}

// Run runs one scenario and returns its result; progress goes to out.
// A run that lost a delivery returns its result and ErrLost.
func Run(ctx context.Context, p Params, out io.Writer) (*Result, error) {
	r := &run{p: p, out: out, res: &Result{Scenario: p.Scenario, Target: p.Target, Params: p, Machine: ReadMachine(),
		GoVersion: goVersion(), Git: gitRevision(), Started: time.Now(), Figures: map[string]float64{}}}
	defer r.cleanup()
	start := time.Now()
	var err error
	switch p.Scenario {
	case Idle:
		err = r.idle(ctx)
	case Unicast:
		err = r.unicast(ctx, false)
	case Churn:
		err = r.unicast(ctx, true)
	case Broadcast:
		err = r.broadcast(ctx)
	case Cluster:
		err = r.cluster(ctx)
	default:
		err = fmt.Errorf("unknown scenario %q", p.Scenario)
	}
	r.res.Seconds = time.Since(start).Seconds()
	if r.res.Lost > 0 {
		for _, s := range r.servers {
			r.res.Notes = append(r.res.Notes, "log of "+s.Name+":\n"+s.log.tail(30))
		}
		c := r.counters(context.Background())
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("clients: %+v", c))
	}
	if err == nil && r.res.Lost > 0 {
		err = fmt.Errorf("%w: %d of %d deliveries", ErrLost, r.res.Lost, r.res.Expected)
	}
	return r.res, err
}

// ErrLost marks a run in which a message did not reach a client.
var ErrLost = errors.New("lost deliveries")

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.out, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func (r *run) cleanup() {
	start := time.Now()
	for _, w := range r.workers {
		_ = w.Close()
	}
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.logf("stopped clients and servers in %.1fs", time.Since(start).Seconds())
}

// ---- servers

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *run) heraldOptions() HeraldOptions {
	return HeraldOptions{Bin: r.p.HeraldBin, Dir: filepath.Join(r.p.Dir, "herald-"+randomHex(3)),
		Secret: []byte(randomHex(16)), APIKey: randomHex(16), Cluster: []byte(randomHex(16)), Extra: append(r.profileArgs(), r.p.HeraldArgs...)}
}

// startTargets returns the servers a scenario measures: the external ones
// when given, else one server the tool starts.
func (r *run) startTargets(ctx context.Context) ([]*Server, error) {
	if len(r.p.URLs) > 0 {
		ss, err := External{URLs: r.p.URLs, JWTSecret: r.p.JWTSecret, APIKey: r.p.APIKey}.Connect(ctx, r.p.Target)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, ss...)
		r.logf("using %d running server(s): %s", len(ss), strings.Join(r.p.URLs, ", "))
		return ss, nil
	}
	var s *Server
	var err error
	if r.p.Target == "" || r.p.Target == "herald" {
		s, err = StartHerald(ctx, r.heraldOptions(), "herald-1", nil)
	} else {
		s, err = StartBaseline(ctx, r.p.BaselineBin, r.p.Target, "")
	}
	if err != nil {
		return nil, err
	}
	r.servers = append(r.servers, s)
	r.cleanups = append(r.cleanups, func() {
		if err := s.Stop(30 * time.Second); err != nil {
			r.logf("stopping %s: %v", s.Name, err)
		}
	})
	r.logf("started %s at %s (pid %d)", s.Name, s.HTTP, s.PID())
	return []*Server{s}, nil
}

// connectTo connects the clients to one server directly, or to several
// through their route endpoint so that each lands on its ring owner.
func (r *run) connectTo(ctx context.Context, ss []*Server) (time.Duration, error) {
	if len(ss) == 1 {
		return r.connect(ctx, []string{ss[0].WS}, nil, string(ss[0].secret))
	}
	var route []string
	for _, s := range ss {
		route = append(route, s.HTTP)
	}
	return r.connect(ctx, nil, route, string(ss[0].secret))
}

// usage sums the servers' usage.
func (r *run) usage(ctx context.Context, settle bool) (Usage, error) {
	var sum Usage
	for _, s := range r.servers {
		u, err := s.Usage(ctx, settle)
		if err != nil {
			return sum, err
		}
		sum.RSS += u.RSS
		sum.CPU += u.CPU
		sum.HeapInuse += u.HeapInuse
		sum.Goroutines += u.Goroutines
	}
	return sum, nil
}

// sourceIPs splits the client source addresses among n workers: the
// given ones, else for loopback servers enough of 127.0.0.2... for
// PerSourceIP connections each, else none (the kernel picks).
func (r *run) sourceIPs(n, perWorker int) [][]string {
	out := make([][]string, n)
	switch {
	case len(r.p.SourceIPs) > 0:
		for i, ip := range r.p.SourceIPs {
			out[i%n] = append(out[i%n], ip)
		}
		for i := range out {
			if len(out[i]) == 0 { // fewer addresses than workers: share
				out[i] = []string{r.p.SourceIPs[i%len(r.p.SourceIPs)]}
			}
		}
	case loopback(r.servers):
		each := (perWorker + PerSourceIP - 1) / PerSourceIP
		all := SourceIPs(n * each)
		for i := range out {
			out[i] = all[i*each : (i+1)*each]
		}
	}
	return out
}

// ---- clients

// connect starts the workers and connects p.Conns users to urls (or by
// route), returning the connect time.
func (r *run) connect(ctx context.Context, urls, route []string, secret string) (time.Duration, error) {
	n := r.p.Workers
	if n == 0 {
		n = (r.p.Conns + PerWorker - 1) / PerWorker
	}
	inProcess := r.p.Workers == 0 && n == 1
	perWorker := (r.p.Conns + n - 1) / n
	ips := r.sourceIPs(n, perWorker)
	r.users = make([]string, r.p.Conns)
	for i := range r.users {
		r.users[i] = fmt.Sprintf("%s%d", cmp.Or(r.p.UserPrefix, "user-"), i)
	}
	r.byWorker = make([][]string, n)
	for i, u := range r.users {
		r.byWorker[i%n] = append(r.byWorker[i%n], u)
	}
	for i := range n {
		var w Worker
		var err error
		if inProcess {
			w, err = NewLocal(ips[i], r.p.Ack)
		} else {
			w, err = StartRemote(r.p.Self, ips[i], r.p.Ack)
		}
		if err != nil {
			return 0, err
		}
		r.workers = append(r.workers, w)
	}
	r.toolBase = r.loadRSS()
	mode := "in this process"
	if !inProcess {
		mode = fmt.Sprintf("in %d worker processes", n)
	}
	src := "chosen by the kernel"
	if len(ips[0]) > 0 {
		src = ips[0][0] + ".." + ips[n-1][len(ips[n-1])-1]
	}
	r.logf("connecting %d clients %s (source addresses %s)", r.p.Conns, mode, src)
	start := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, w := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec := Spec{Users: r.byWorker[i], URLs: urls, Route: route, Secret: secret, Ack: r.p.Ack}
			if r.p.ConnectRate > 0 {
				spec.Rate = r.p.ConnectRate / float64(n)
			}
			c, err := w.Connect(ctx, spec)
			if err == nil && c.Failed > 0 {
				err = fmt.Errorf("%d connections failed", c.Failed)
			}
			errs[i] = err
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			took := time.Since(start)
			if err := errors.Join(errs...); err != nil {
				return took, err
			}
			c := r.counters(ctx)
			if c.Connected != r.p.Conns {
				return took, fmt.Errorf("%d of %d clients connected", c.Connected, r.p.Conns)
			}
			r.logf("connected %d clients in %.1fs (%.0f/s)", r.p.Conns, took.Seconds(), float64(r.p.Conns)/took.Seconds())
			return took, nil
		case <-t.C:
			c := r.counters(ctx)
			r.logf("  ... %d connected (%.0f/s)", c.Connected, float64(c.Connected)/time.Since(start).Seconds())
		}
	}
}

// counters sums the workers' counters.
func (r *run) counters(ctx context.Context) Counters {
	var sum Counters
	for _, w := range r.workers {
		c, err := w.Counters(ctx)
		if err != nil {
			continue
		}
		sum.Connected += c.Connected
		sum.Messages += c.Messages
		sum.Unique += c.Unique
		sum.Readies += c.Readies
		sum.Closes += c.Closes
		sum.AcksLost += c.AcksLost
		sum.Failed += c.Failed
	}
	return sum
}

// receipts collects what every client received.
func (r *run) receipts(ctx context.Context) (Receipts, error) {
	all := Receipts{Users: map[string]map[string]uint16{}, Nodes: map[string]string{}}
	for _, w := range r.workers {
		rc, err := w.Receipts(ctx)
		if err != nil {
			return all, err
		}
		for u, m := range rc.Users {
			all.Users[u] = m
		}
		for u, n := range rc.Nodes {
			all.Nodes[u] = n
		}
		all.Latencies = append(all.Latencies, rc.Latencies...)
	}
	return all, nil
}

// waitMessages waits until the clients have received at least n distinct
// messages in total (repeats not counted), or timeout.
func (r *run) waitMessages(ctx context.Context, n int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if r.counters(ctx).Unique >= n {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// check counts lost and duplicated deliveries: expect maps each message
// ID to its recipients (nil: every user).
func (r *run) check(rc Receipts, expect map[string][]string) {
	for id, users := range expect {
		if users == nil {
			users = r.users
		}
		for _, u := range users {
			r.res.Expected++
			got := rc.Users[u][id]
			if got == 0 {
				r.res.Lost++
				if len(r.res.LostSamples) < 20 {
					r.res.LostSamples = append(r.res.LostSamples, u+"/"+id)
				}
				continue
			}
			r.res.Delivered++
			r.res.Duplicates += int64(got - 1)
		}
	}
}

// latencyFigures adds percentiles of ns latencies as milliseconds.
func (r *run) latencyFigures(prefix string, lats []int64) {
	if len(lats) == 0 {
		return
	}
	slices.Sort(lats)
	pct := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(lats)))) - 1
		return float64(lats[max(0, min(i, len(lats)-1))]) / 1e6
	}
	r.res.Figures[prefix+"p50_ms"] = pct(0.50)
	r.res.Figures[prefix+"p99_ms"] = pct(0.99)
	r.res.Figures[prefix+"p999_ms"] = pct(0.999)
	r.res.Figures[prefix+"max_ms"] = float64(lats[len(lats)-1]) / 1e6
}

// ---- scenarios

// idle: N connections open and idle; memory and CPU per connection.
func (r *run) idle(ctx context.Context) error {
	ss, err := r.startTargets(ctx)
	if err != nil {
		return err
	}
	before, err := r.usage(ctx, true)
	if err != nil {
		return err
	}
	slab0, slabErr := proc.KernelMemory()
	took, err := r.connectTo(ctx, ss)
	if err != nil {
		return err
	}
	after, err := r.usage(ctx, true)
	if err != nil {
		return err
	}
	if tool := r.loadRSS(); tool > 0 {
		// The workers' RSS, less what an empty worker takes.
		r.res.Figures["load_tool_rss_per_conn_bytes"] = float64(tool-r.toolBase) / float64(r.p.Conns)
	}
	if slab1, err := proc.KernelMemory(); err == nil && slabErr == nil && loopback(ss) {
		// Both ends of every connection are on this machine.
		r.res.Figures["kernel_slab_per_conn_pair_bytes"] = float64(slab1-slab0) / float64(r.p.Conns)
	}
	n := float64(r.p.Conns)
	f := r.res.Figures
	f["conns"] = n
	f["connects_per_sec"] = n / took.Seconds()
	f["rss_before_bytes"] = float64(before.RSS)
	f["rss_after_bytes"] = float64(after.RSS)
	f["rss_per_conn_bytes"] = float64(after.RSS-before.RSS) / n
	f["heap_per_conn_bytes"] = float64(after.HeapInuse-before.HeapInuse) / n
	f["goroutines_per_conn"] = float64(after.Goroutines-before.Goroutines) / n
	r.logf("memory: %.0f bytes RSS per connection (%.1f MB for %d), heap %.0f B/conn, %.3f goroutines/conn",
		f["rss_per_conn_bytes"], float64(after.RSS-before.RSS)/1e6, r.p.Conns, f["heap_per_conn_bytes"], f["goroutines_per_conn"])
	d := r.p.Duration
	if d <= 0 {
		d = 10 * time.Second
	}
	r.logf("idling %v to measure CPU (pings and binding refresh included)", d)
	prof := r.startProfiles(ctx, d)
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	end, err := r.usage(ctx, false)
	if err != nil {
		return err
	}
	prof.wait(ctx)
	f["idle_cpu_percent"] = 100 * (end.CPU - after.CPU).Seconds() / d.Seconds()
	if c := r.counters(ctx); c.Connected != r.p.Conns {
		r.res.Lost = int64(r.p.Conns - c.Connected)
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("%d connections dropped while idle", r.p.Conns-c.Connected))
	}
	r.logf("idle CPU: %.2f%% of a core", f["idle_cpu_percent"])
	return nil
}

// broadcast: one message to every connection, repeated; time to last
// delivery.
func (r *run) broadcast(ctx context.Context) error {
	ss, err := r.startTargets(ctx)
	if err != nil {
		return err
	}
	if _, err := r.connectTo(ctx, ss); err != nil {
		return err
	}
	return r.broadcasts(ctx, ss)
}

// broadcasts sends p.Broadcasts broadcasts (through the servers in turn),
// one at a time, each waited for.
func (r *run) broadcasts(ctx context.Context, via []*Server) error {
	k := max(r.p.Broadcasts, 1)
	n := int64(r.p.Conns)
	for _, s := range via {
		s.keys = r.p.Keys
	}
	expect := map[string][]string{}
	var lastDelivery []float64
	base := r.counters(ctx).Unique
	prof := r.startProfiles(ctx, time.Duration(k)*time.Second)
	cpu0 := r.serverCPU()
	start := time.Now()
	for i := range k {
		s := via[i%len(via)]
		id, err := s.Post(ctx, nil)
		if err != nil {
			return err
		}
		expect[id] = nil
		if !r.waitMessages(ctx, base+int64(i+1)*n, 30*time.Second) {
			r.logf("broadcast %d did not reach every client within 30 s", i+1)
			break
		}
		lats := r.latencies(ctx)
		if len(lats) > 0 {
			lastDelivery = append(lastDelivery, float64(slices.Max(lats))/1e6)
		}
	}
	total := time.Since(start)
	cpu := r.serverCPU() - cpu0
	prof.wait(ctx)
	rc, err := r.receipts(ctx)
	if err != nil {
		return err
	}
	r.check(rc, expect)
	f := r.res.Figures
	f["conns"] = float64(n)
	f["broadcasts"] = float64(k)
	sort.Float64s(lastDelivery)
	if len(lastDelivery) > 0 {
		f["last_delivery_p50_ms"] = lastDelivery[len(lastDelivery)/2]
		f["last_delivery_max_ms"] = lastDelivery[len(lastDelivery)-1]
		f["last_delivery_min_ms"] = lastDelivery[0]
	}
	f["deliveries_per_sec"] = float64(r.res.Delivered) / total.Seconds()
	f["server_cpu_sec_per_million"] = cpu.Seconds() / float64(max(r.res.Delivered, 1)) * 1e6
	r.logf("broadcast to %d: last delivery after %.1f ms (median of %d), %.0f deliveries/s; lost %d, duplicates %d",
		n, f["last_delivery_p50_ms"], k, f["deliveries_per_sec"], r.res.Lost, r.res.Duplicates)
	return nil
}

// latencies drains the workers' latency records.
func (r *run) latencies(ctx context.Context) []int64 {
	var out []int64
	for _, w := range r.workers {
		lats, err := w.Latencies(ctx)
		if err != nil {
			r.logf("latencies: %v", err)
			continue
		}
		out = append(out, lats...)
	}
	return out
}

// loadRSS is the resident memory of this process and the worker
// processes.
func (r *run) loadRSS() int64 {
	// An earlier run in this process (compare, go test) leaves freed
	// memory the runtime has not returned yet; return it so the reading
	// is of live client state.
	runtime.GC()
	debug.FreeOSMemory()
	var sum int64
	for pid := range r.toolPIDs() {
		if rss, err := proc.RSS(pid); err == nil {
			sum += rss
		}
	}
	return sum
}

func (r *run) toolPIDs() map[int]bool {
	pids := map[int]bool{os.Getpid(): true}
	for _, w := range r.workers {
		pids[w.PID()] = true
	}
	return pids
}

// loadCPU is the CPU time used by this process and the worker processes:
// on a machine shared with the server, what the load tool took from it.
func (r *run) loadCPU() time.Duration {
	var sum time.Duration
	for pid := range r.toolPIDs() {
		if c, err := proc.CPU(pid); err == nil {
			sum += c
		}
	}
	return sum
}

func (r *run) serverCPU() time.Duration {
	var sum time.Duration
	for _, s := range r.servers {
		if u, err := s.Usage(context.Background(), false); err == nil {
			sum += u.CPU
		}
	}
	return sum
}

// unicast: messages at a steady rate to random online users; with churn,
// a share of the clients reconnects with since all along.
func (r *run) unicast(ctx context.Context, churn bool) error {
	ss, err := r.startTargets(ctx)
	if err != nil {
		return err
	}
	if _, err := r.connectTo(ctx, ss); err != nil {
		return err
	}
	stopChurn := func() int { return 0 }
	if churn {
		stopChurn = r.churn(ctx)
	}
	sent, err := r.send(ctx, ss)
	reconnects := stopChurn()
	if err != nil {
		return err
	}
	return r.finishUnicast(ctx, sent, reconnects, churn)
}

// sent records what send posted.
type sent struct {
	expect map[string][]string // message ID -> recipient
	via    map[string]string   // message ID -> server name
	took   time.Duration
	cpu    time.Duration // servers
	load   time.Duration // the load tool
	posts  []int64       // POST round trips, ns
	retry  int64         // POSTs repeated (see Server.postRetrying)
}

// send posts p.Rate messages a second for p.Duration to random users,
// through the servers in turn, from 64 senders.
func (r *run) send(ctx context.Context, via []*Server) (*sent, error) {
	rate := r.p.Rate
	if rate <= 0 {
		rate = 1000
	}
	d := r.p.Duration
	if d <= 0 {
		d = 10 * time.Second
	}
	total := int(rate * d.Seconds())
	for _, s := range via {
		s.keys = r.p.Keys
	}
	out := &sent{expect: make(map[string][]string, total), via: make(map[string]string, total)}
	var mu sync.Mutex
	var errs atomic.Int64
	var firstErr atomic.Value
	jobs := make(chan int, 1024)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				s := via[i%len(via)]
				u := r.users[mrand.IntN(len(r.users))]
				t0 := time.Now()
				id, err := s.Post(ctx, []string{u})
				rt := time.Since(t0)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				mu.Lock()
				out.expect[id] = []string{u}
				out.via[id] = s.Name
				out.posts = append(out.posts, int64(rt))
				mu.Unlock()
			}
		}()
	}
	r.logf("sending %d messages at %.0f/s for %v", total, rate, d)
	prof := r.startProfiles(ctx, d)
	defer prof.wait(ctx)
	cpu0, load0 := r.serverCPU(), r.loadCPU()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	next := start
	for i := range total {
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		next = next.Add(interval)
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
		if i > 0 && i%int(max(rate, 1)) == 0 {
			r.logf("  ... %d sent", i)
		}
	}
	close(jobs)
	wg.Wait()
	out.took = time.Since(start)
	out.cpu = r.serverCPU() - cpu0
	out.load = r.loadCPU() - load0
	for _, v := range via {
		out.retry += v.retries.Swap(0)
	}
	if n := errs.Load(); n > 0 {
		err, _ := firstErr.Load().(error)
		return out, fmt.Errorf("%d of %d POSTs failed, e.g. %v", n, total, err)
	}
	return out, nil
}

// churn disconnects ChurnShare of the clients every ChurnEvery and
// reconnects them with since, until the returned function is called; it
// returns how many reconnected.
func (r *run) churn(ctx context.Context) func() int {
	every := r.p.ChurnEvery
	if every <= 0 {
		every = time.Second
	}
	share := r.p.ChurnShare
	if share <= 0 {
		share = 0.05
	}
	stop := make(chan struct{})
	var reconnects atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			var inner sync.WaitGroup
			for _, w := range r.workers {
				inner.Add(1)
				go func() {
					defer inner.Done()
					n, err := w.Churn(ctx, share, 50*time.Millisecond)
					if err != nil {
						r.logf("churn: %v", err)
					}
					reconnects.Add(int64(n))
				}()
			}
			inner.Wait()
		}
	}()
	return func() int {
		close(stop)
		wg.Wait()
		return int(reconnects.Load())
	}
}

// finishUnicast waits for the deliveries, then checks and measures them.
func (r *run) finishUnicast(ctx context.Context, s *sent, reconnects int, churn bool) error {
	want := int64(len(s.expect))
	if !r.waitMessages(ctx, want, 30*time.Second) {
		r.logf("not every message arrived within 30 s; counting what did")
	}
	rc, err := r.receipts(ctx)
	if err != nil {
		return err
	}
	r.check(rc, s.expect)
	f := r.res.Figures
	f["conns"] = float64(r.p.Conns)
	f["messages"] = float64(want)
	f["rate"] = float64(want) / s.took.Seconds()
	f["deliveries_per_sec"] = float64(r.res.Delivered) / s.took.Seconds()
	f["server_cpu_sec_per_million"] = s.cpu.Seconds() / float64(max(r.res.Delivered, 1)) * 1e6
	f["server_cpu_cores"] = s.cpu.Seconds() / s.took.Seconds()
	f["load_tool_cpu_cores"] = s.load.Seconds() / s.took.Seconds()
	r.latencyFigures("latency_", rc.Latencies)
	r.latencyFigures("post_", s.posts)
	r.res.Figures["post_retries"] = float64(s.retry)
	if s.retry > 0 {
		r.logf("%d POSTs were retried (5xx or a broken connection), with the same key", s.retry)
	}
	// Herald's own view, from its histograms (bucket upper bounds).
	for _, srv := range r.servers {
		if srv.Kind != "herald" {
			continue
		}
		for name, key := range map[string]string{"herald_store_append_seconds": "server_append_", "herald_dispatch_latency_seconds": "server_dispatch_"} {
			if q, err := srv.Quantiles(ctx, name, 0.5, 0.99); err == nil {
				f[key+"p50_ms_le"] = max(f[key+"p50_ms_le"], q[0])
				f[key+"p99_ms_le"] = max(f[key+"p99_ms_le"], q[1])
			}
		}
	}
	if churn {
		f["reconnects"] = float64(reconnects)
		f["reconnects_per_sec"] = float64(reconnects) / s.took.Seconds()
		f["replayed_or_repeated"] = float64(r.res.Duplicates)
	}
	if len(s.via) > 0 && len(rc.Nodes) > 0 {
		cross := 0
		for id, users := range s.expect {
			if rc.Nodes[users[0]] != s.via[id] {
				cross++
			}
		}
		f["cross_node_share"] = float64(cross) / float64(len(s.expect))
	}
	r.logf("%d messages at %.0f/s: latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms; lost %d, duplicates %d",
		want, f["rate"], f["latency_p50_ms"], f["latency_p99_ms"], f["latency_p999_ms"], f["latency_max_ms"], r.res.Lost, r.res.Duplicates)
	if churn {
		r.logf("churn: %d reconnects (%.1f/s) with since", reconnects, f["reconnects_per_sec"])
	}
	return nil
}

// cluster: Redis, a MongoDB-wire server and p.Nodes Herald nodes; clients
// connect to their ring owners; unicast then broadcasts through every node.
func (r *run) cluster(ctx context.Context) error {
	if len(r.p.URLs) > 0 {
		if _, err := r.startTargets(ctx); err != nil {
			return err
		}
		return r.clusterRun(ctx, len(r.p.URLs))
	}
	nodes := max(r.p.Nodes, 3)
	redisURL, err := r.startRedis()
	if err != nil {
		return err
	}
	mongoURI, err := r.startMongo(ctx)
	if err != nil {
		return err
	}
	o := r.heraldOptions()
	o.Extra = append(o.Extra, "--redis", redisURL, "--mongo", mongoURI)
	var seeds []string
	for i := range nodes {
		s, err := StartHerald(ctx, o, fmt.Sprintf("node-%d", i+1), seeds)
		if err != nil {
			return err
		}
		seeds = append(seeds, s.Gossip)
		r.servers = append(r.servers, s)
		r.cleanups = append(r.cleanups, func() { _ = s.Stop(30 * time.Second) })
		r.logf("started %s at %s", s.Name, s.HTTP)
	}
	return r.clusterRun(ctx, nodes)
}

// clusterRun waits for the nodes to see each other, connects the clients
// to their ring owners, then runs unicast and broadcasts through every node.
func (r *run) clusterRun(ctx context.Context, nodes int) error {
	if err := r.waitMembers(ctx, nodes); err != nil {
		return err
	}
	before, err := r.usage(ctx, true)
	if err != nil {
		return err
	}
	if _, err := r.connectTo(ctx, r.servers); err != nil {
		return err
	}
	after, err := r.usage(ctx, true)
	if err != nil {
		return err
	}
	rssPerConn := float64(after.RSS-before.RSS) / float64(r.p.Conns)
	r.logf("memory: %.0f bytes RSS per connection over %d nodes (%.1f MB for %d)",
		rssPerConn, nodes, float64(after.RSS-before.RSS)/1e6, r.p.Conns)
	s, err := r.send(ctx, r.servers)
	if err != nil {
		return err
	}
	if err := r.finishUnicast(ctx, s, 0, false); err != nil {
		return err
	}
	unicast := r.res.Figures
	r.res.Figures = map[string]float64{}
	if err := r.broadcasts(ctx, r.servers); err != nil {
		return err
	}
	for k, v := range r.res.Figures {
		unicast["broadcast_"+k] = v
	}
	unicast["rss_per_conn_bytes"] = rssPerConn
	r.res.Figures = unicast
	return nil
}

// waitMembers waits until every node lists n members.
func (r *run) waitMembers(ctx context.Context, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := true
		for _, s := range r.servers {
			var v struct{ Nodes []struct{ ID string } }
			if err := s.getJSON(ctx, "/v1/nodes", &v); err != nil || len(v.Nodes) < n {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the cluster did not converge within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startRedis starts a redis-server on a free port.
func (r *run) startRedis() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(r.p.Dir, "redis-"+randomHex(3))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("redis-server (install it: apt-get install redis-server): %w", err)
	}
	r.cleanups = append(r.cleanups, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitTCP(addr, 10*time.Second); err != nil {
		return "", err
	}
	r.logf("started redis-server at %s", addr)
	return "redis://" + addr + "/0", nil
}

// startMongo starts herald-devmongo (an embedded FerretDB) on a free port.
func (r *run) startMongo(ctx context.Context) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{Kind: "mongo", Name: "devmongo"}
	if _, err := s.start(ctx, r.p.DevMongoBin, []string{"--addr", addr, "--dir", filepath.Join(r.p.Dir, "mongo-"+randomHex(3))},
		reMongo, true); err != nil {
		return "", err
	}
	r.cleanups = append(r.cleanups, func() { _ = s.Stop(10 * time.Second) })
	r.logf("started a MongoDB-wire server (herald-devmongo) at %s", addr)
	return "mongodb://" + addr + "/", nil
}
