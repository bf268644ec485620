package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// proc is one child process the drill starts, kills and restarts.
type proc struct {
	name string
	args []string
	bin  string
	log  string // its output file

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}

	stopping   bool  // the drill is stopping it
	unexpected error // how it exited when the drill did not stop it
}

// crashed returns how the process exited, if it exited on its own.
func (p *proc) crashed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unexpected
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is running", p.name)
	}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: no orphan outlives the drill. Setpgid: each child in a
	// process group of its own, because the kernel sends SIGHUP to every
	// member of a process group that becomes orphaned while one of them
	// is stopped, and the drill stops nodes: a frozen node in the drill's
	// group died of SIGHUP when an unrelated process of the group exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := startOnSpawner(cmd); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		out.Close()
		p.mu.Lock()
		if !p.stopping && p.unexpected == nil {
			p.unexpected = fmt.Errorf("%s exited on its own: %v (see its log)", p.name, err)
		}
		p.mu.Unlock()
		close(exited)
	}()
	p.cmd, p.exited, p.stopping = cmd, exited, false
	return nil
}

// spawner is a goroutine locked to its OS thread for good, which starts
// every child process. A child's Pdeathsig fires when the thread that
// forked it exits, not the process (go.dev/issue/27505), and the Go
// runtime may end threads: a drill lost a node that way, killed with no
// log line just after a freeze.
var spawner = sync.OnceValue(func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for f := range ch {
			f()
		}
	}()
	return ch
})

func startOnSpawner(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	spawner() <- func() { done <- cmd.Start() }
	return <-done
}

// signal sends sig to the process, if it runs.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop sends sig and waits (up to timeout, then SIGKILL) for the exit.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot exit
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// waitTCP waits until something listens on addr.
func waitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a free TCP port on ip.
func freePort(ip string) (int, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Node is one Herald process of the drill.
type Node struct {
	ID  string
	IP  string
	URL string // http://IP:port
	p   *proc
	ctl string // chaos control URL
}

// Cluster is the drill's processes: redis-server, a MongoDB-wire server
// (herald-devmongo: FerretDB on SQLite) and Herald nodes, each on a
// loopback IP of its own (127.0.0.11, .12, ...).
type Cluster struct {
	dir    string
	redis  *proc
	mongo  *proc
	nodes  []*Node
	secret string
	jwt    string
	apiKey string

	redisAddr, mongoAddr string
}

// Secrets of the drill's cluster.
const (
	clusterSecret = "chaos-cluster-secret-0123456789abcdef"
	jwtSecret     = "chaos-jwt-secret-0123456789abcdef"
	apiKey        = "chaos-api-key-0123456789"
)

func startCluster(ctx context.Context, cfg *Config) (*Cluster, error) {
	c := &Cluster{dir: cfg.Dir, secret: clusterSecret, jwt: jwtSecret, apiKey: apiKey}
	rport, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	mport, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	c.redisAddr = fmt.Sprintf("127.0.0.1:%d", rport)
	c.mongoAddr = fmt.Sprintf("127.0.0.1:%d", mport)
	c.redis = &proc{name: "redis", bin: cfg.RedisServer, log: filepath.Join(cfg.Dir, "redis.log"),
		args: []string{"--port", fmt.Sprint(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}}
	c.mongo = &proc{name: "mongo", bin: cfg.DevMongo, log: filepath.Join(cfg.Dir, "mongo.log"),
		args: []string{"--addr", c.mongoAddr, "--dir", filepath.Join(cfg.Dir, "mongo-data")}}
	for _, p := range []*proc{c.redis, c.mongo} {
		if err := p.start(); err != nil {
			c.stop()
			return nil, err
		}
	}
	for _, a := range []string{c.redisAddr, c.mongoAddr} {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := waitTCP(wctx, a)
		cancel()
		if err != nil {
			c.stop()
			return nil, err
		}
	}
	// Each node on its own loopback IP, on free ports (other tests may run
	// next to a drill).
	type ports struct{ http, gossip, rpc, ctl int }
	var ps []ports
	var gossip []string
	for i := range cfg.Nodes {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		var p ports
		for _, x := range []*int{&p.http, &p.gossip, &p.rpc, &p.ctl} {
			if *x, err = freePort(ip); err != nil {
				c.stop()
				return nil, err
			}
		}
		ps = append(ps, p)
		gossip = append(gossip, fmt.Sprintf("%s:%d", ip, p.gossip))
	}
	for i := range cfg.Nodes {
		ip, p := fmt.Sprintf("127.0.0.%d", 11+i), ps[i]
		hp := func(port int) string { return fmt.Sprintf("%s:%d", ip, port) }
		n := &Node{ID: fmt.Sprintf("node-%d", i), IP: ip, URL: "http://" + hp(p.http), ctl: "http://" + hp(p.ctl)}
		n.p = &proc{name: n.ID, bin: cfg.Herald, log: filepath.Join(cfg.Dir, n.ID+".log"), args: []string{"serve",
			"--node-id", n.ID, "--addr", hp(p.http), "--public-url", n.URL,
			"--gossip-addr", hp(p.gossip), "--rpc-addr", hp(p.rpc), "--join", strings.Join(gossip, ","),
			"--redis", "redis://" + c.redisAddr, "--mongo", "mongodb://" + c.mongoAddr,
			"--cluster-secret", c.secret, "--jwt-secret", c.jwt, "--api-key", c.apiKey,
			"--data-dir", filepath.Join(cfg.Dir, n.ID), "--drain-spread", "500ms", "--drain-timeout", "15s",
			// FerretDB scans its whole collection for every replay: a few
			// at a time, per node, is what it can take.
			"--replay-workers", "4", "--write-queue-bytes", "256KiB", "--socket-send-buffer", "64KiB",
			"--chaos-control", hp(p.ctl), "--chaos-fast", "--log-level", "info"}}
		c.nodes = append(c.nodes, n)
		if err := n.p.start(); err != nil {
			c.stop()
			return nil, err
		}
	}
	for _, n := range c.nodes {
		if err := c.waitNode(ctx, n); err != nil {
			c.stop()
			return nil, err
		}
	}
	if err := c.converge(ctx, 60*time.Second); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// waitNode waits until n answers /healthz.
func (c *Cluster) waitNode(ctx context.Context, n *Node) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := httpClient.Get(n.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up (see %s)", n.ID, n.p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// converge waits until every running node lists every running node.
func (c *Cluster) converge(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var running []*Node
		for _, n := range c.nodes {
			if n.p.running() {
				running = append(running, n)
			}
		}
		ok := true
		for _, n := range running {
			ids, err := members(n)
			if err != nil || len(ids) != len(running) {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not converge within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func members(n *Node) ([]string, error) {
	resp, err := httpClient.Get(n.URL + "/v1/nodes")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct {
		Nodes []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range v.Nodes {
		if m.State == "running" {
			ids = append(ids, m.ID)
		}
	}
	return ids, nil
}

// running returns the nodes whose process runs (frozen ones included).
func (c *Cluster) running() []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if n.p.running() {
			out = append(out, n)
		}
	}
	return out
}

// restart starts a node again after a kill or a stop.
func (c *Cluster) restart(ctx context.Context, n *Node) error {
	if err := n.p.start(); err != nil {
		return err
	}
	return c.waitNode(ctx, n)
}

// chaos sets a node's fault state (blocked hosts, clock offset).
func (c *Cluster) chaos(n *Node, block []string, offset time.Duration) error {
	body, _ := json.Marshal(map[string]any{"block": block, "clock_offset": offset.String()})
	resp, err := httpClient.Post(n.ctl+"/chaos", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("chaos control of %s: %s", n.ID, resp.Status)
	}
	return nil
}

// flushRedis empties Redis while it runs.
func (c *Cluster) flushRedis(ctx context.Context) error {
	r := goredis.NewClient(&goredis.Options{Addr: c.redisAddr})
	defer r.Close()
	return r.FlushAll(ctx).Err()
}

// stop kills everything.
func (c *Cluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.p.stop(syscall.SIGKILL, 5*time.Second) }()
	}
	wg.Wait()
	for _, p := range []*proc{c.redis, c.mongo} {
		if p != nil {
			p.stop(syscall.SIGKILL, 5*time.Second)
		}
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// crashed reports a process that exited without the drill stopping it.
func (c *Cluster) crashed() error {
	var errs []error
	for _, p := range append([]*proc{c.redis, c.mongo}, c.procs()...) {
		if err := p.crashed(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) procs() []*proc {
	out := make([]*proc, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.p
	}
	return out
}

// busyGauges are the gauges that show a node still recovering from a
// fault: replays waiting or running, appends not settled.
var busyGauges = []string{"herald_edge_replays_queued", "herald_edge_replays_running", "herald_store_unresolved_appends"}

// quiet waits until every running node has finished recovering: no
// replay queued or running, no append left to settle, and its cursor
// within 3 s of its clock, for a second on end. It returns how long that
// took (not counting the second).
func (c *Cluster) quiet(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var calm time.Time // since when every node has looked quiet
	for {
		if err := c.crashed(); err != nil {
			return time.Since(start), err
		}
		busy := ""
		for _, n := range c.running() {
			g, err := gauges(ctx, n)
			if err != nil {
				busy = n.ID + ": " + err.Error()
				break
			}
			for _, name := range busyGauges {
				if g[name] > 0 {
					busy = fmt.Sprintf("%s: %s %v", n.ID, name, g[name])
				}
			}
			if lag := g["herald_push_cursor_lag_seconds"]; lag > 3 {
				busy = fmt.Sprintf("%s: cursor %.1f s behind", n.ID, lag)
			}
			if busy != "" {
				break
			}
		}
		switch {
		case busy != "":
			calm = time.Time{}
		case calm.IsZero():
			calm = time.Now()
		case time.Since(calm) >= time.Second:
			// Quiet for a second: a recovery that starts a moment after the
			// fault (a lease check noticing a FLUSHALL) has shown by then.
			return calm.Sub(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("the cluster is still busy after %v (%s)", timeout, busy)
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return time.Since(start), ctx.Err()
		}
	}
}

// gauges reads a node's unlabelled gauges from /metrics.
func gauges(ctx context.Context, n *Node) (map[string]float64, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, n.URL+"/metrics", nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}
