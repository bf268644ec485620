package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldpush/herald/benchmarks/wsclient"
	"github.com/heraldpush/herald/node/auth"
)

// PerWorker is how many connections one worker process holds: under the
// 20,000 open files a process may have here, with room for the rest.
const PerWorker = 18000

// PerSourceIP is how many connections to one server port one source
// address carries: Linux's connect() uses about half of the default
// ephemeral port range (32768-60999) for a given destination.
const PerSourceIP = 10000

// Spec says what a worker connects.
type Spec struct {
	Users  []string `json:"users"`  // one connection each
	URLs   []string `json:"urls"`   // WebSocket URLs, round robin
	Route  []string `json:"route"`  // HTTP bases to ask /v1/route (cluster); overrides URLs
	Secret string   `json:"secret"` // JWT secret; empty: token "x" (baselines)
	Rate   float64  `json:"rate"`   // connects per second (0: unlimited)
	Ack    bool     `json:"ack"`
}

// Counters are a worker's running totals.
type Counters struct {
	Connected int   `json:"connected"`
	Messages  int64 `json:"messages"`
	Unique    int64 `json:"unique"` // Messages less repeats
	Readies   int64 `json:"readies"`
	Closes    int64 `json:"closes"`
	AcksLost  int64 `json:"acks_lost"`
	Failed    int64 `json:"failed"`
}

// Receipts is what a worker's clients received.
type Receipts struct {
	Users     map[string]map[string]uint16 `json:"users"`     // user -> message ID -> count
	Latencies []int64                      `json:"latencies"` // ns, send to receipt
	Nodes     map[string]string            `json:"nodes"`     // user -> node of its last ready frame
}

// Worker holds a share of the client connections.
type Worker interface {
	Connect(ctx context.Context, s Spec) (Counters, error)
	Counters(ctx context.Context) (Counters, error)
	// Churn disconnects a fraction of the clients at random and reconnects
	// them with since after pause; it returns how many reconnected.
	Churn(ctx context.Context, fraction float64, pause time.Duration) (int, error)
	Receipts(ctx context.Context) (Receipts, error)
	// Latencies returns and forgets the latencies recorded so far.
	Latencies(ctx context.Context) ([]int64, error)
	// PID is the process the worker's clients live in.
	PID() int
	Close() error
}

// ---- in-process worker

// PID implements Worker.
func (w *Local) PID() int { return os.Getpid() }

// Local is a worker in this process.
type Local struct {
	pool      *wsclient.Pool
	spec      Spec
	mu        sync.Mutex
	urlN      atomic.Uint64
	errLogged atomic.Int64
}

// NewLocal starts an in-process worker whose connections bind the source
// addresses in turn.
func NewLocal(sourceIPs []string, ack bool) (*Local, error) {
	p, err := wsclient.New(wsclient.Config{SourceIPs: sourceIPs, Ack: ack, Loops: 2})
	if err != nil {
		return nil, err
	}
	return &Local{pool: p}, nil
}

// Connect implements Worker: it connects every user of s, rate-limited,
// 64 handshakes at a time, retrying failures with backoff.
func (w *Local) Connect(ctx context.Context, s Spec) (Counters, error) {
	w.mu.Lock()
	w.spec = s
	w.mu.Unlock()
	tokens := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for user := range tokens {
				c := w.pool.NewClient(user)
				if err := w.connect(ctx, c, false); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	var tick *time.Ticker
	if s.Rate > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / s.Rate))
		defer tick.Stop()
	}
	for _, u := range s.Users {
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		tokens <- u
	}
	close(tokens)
	wg.Wait()
	c, _ := w.Counters(ctx)
	c.Failed = failed.Load()
	return c, ctx.Err()
}

// connect connects one client, retrying with backoff for up to a minute.
func (w *Local) connect(ctx context.Context, c *wsclient.Client, resume bool) error {
	backoff := 50 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		target, err := w.target(ctx, c.User)
		if err == nil {
			err = c.Connect(ctx, target, w.token(c.User), resume)
		}
		if err == nil {
			return nil
		}
		if n := w.errLogged.Add(1); n <= 5 {
			fmt.Fprintf(os.Stderr, "connect %s: %v (retrying)\n", c.User, err)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(backoff + rand.N(backoff))
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (w *Local) token(user string) string {
	if w.spec.Secret == "" {
		return "x"
	}
	tok, _ := auth.Mint([]byte(w.spec.Secret), user, 24*time.Hour)
	return tok
}

var routeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// target is where user should connect: its ring owner (cluster), else the
// next URL.
func (w *Local) target(ctx context.Context, user string) (string, error) {
	if len(w.spec.Route) > 0 {
		base := w.spec.Route[int(w.urlN.Add(1))%len(w.spec.Route)]
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/route?user="+url.QueryEscape(user), nil)
		resp, err := routeClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var r struct{ URL string }
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.URL == "" {
			return "", fmt.Errorf("route %s: %s", user, resp.Status)
		}
		return r.URL, nil
	}
	return w.spec.URLs[int(w.urlN.Add(1))%len(w.spec.URLs)], nil
}

// Counters implements Worker.
func (w *Local) Counters(context.Context) (Counters, error) {
	connected := 0
	for _, c := range w.pool.Clients() {
		if c.Open() {
			connected++
		}
	}
	p := w.pool
	return Counters{Connected: connected, Messages: p.Messages.Load(), Unique: p.Unique.Load(), Readies: p.Readies.Load(),
		Closes: p.Closes.Load(), AcksLost: p.AcksLost.Load(), Failed: p.ConnectKO.Load()}, nil
}

// Churn implements Worker.
func (w *Local) Churn(ctx context.Context, fraction float64, pause time.Duration) (int, error) {
	var picked []*wsclient.Client
	for _, c := range w.pool.Clients() {
		if rand.Float64() < fraction {
			picked = append(picked, c)
			c.Disconnect()
		}
	}
	select {
	case <-time.After(pause):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range picked {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if w.connect(ctx, c, true) == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load()), nil
}

// Receipts implements Worker.
func (w *Local) Receipts(context.Context) (Receipts, error) {
	r := Receipts{Users: map[string]map[string]uint16{}, Nodes: map[string]string{}}
	for _, c := range w.pool.Clients() {
		r.Users[c.User] = c.Received()
		r.Nodes[c.User] = c.Node()
	}
	r.Latencies = w.pool.Latencies()
	return r, nil
}

// Latencies implements Worker.
func (w *Local) Latencies(context.Context) ([]int64, error) { return w.pool.Latencies(), nil }

// Close implements Worker.
func (w *Local) Close() error {
	w.pool.Close()
	return nil
}

// ---- worker processes

// request and response are the lines between a coordinator and a worker
// process on the worker's stdin and stdout.
type request struct {
	Op       string        `json:"op"`
	Spec     *Spec         `json:"spec,omitempty"`
	Fraction float64       `json:"fraction,omitempty"`
	Pause    time.Duration `json:"pause,omitempty"`
}

type response struct {
	Err       string    `json:"err,omitempty"`
	Counters  *Counters `json:"counters,omitempty"`
	N         int       `json:"n,omitempty"`
	Receipts  *Receipts `json:"receipts,omitempty"`
	Latencies []int64   `json:"latencies,omitempty"`
}

// ServeWorker runs a worker process: requests on in, responses on out.
// It returns when in closes or a close request arrives.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer, sourceIPs []string, ack bool) error {
	w, err := NewLocal(sourceIPs, ack)
	if err != nil {
		return err
	}
	defer w.Close()
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var resp response
		switch req.Op {
		case "connect":
			c, err := w.Connect(ctx, *req.Spec)
			resp.Counters = &c
			if err != nil {
				resp.Err = err.Error()
			}
		case "counters":
			c, _ := w.Counters(ctx)
			resp.Counters = &c
		case "churn":
			n, err := w.Churn(ctx, req.Fraction, req.Pause)
			resp.N = n
			if err != nil {
				resp.Err = err.Error()
			}
		case "receipts":
			r, _ := w.Receipts(ctx)
			resp.Receipts = &r
		case "latencies":
			resp.Latencies, _ = w.Latencies(ctx)
		case "close":
			return enc.Encode(resp)
		default:
			resp.Err = "unknown op " + req.Op
		}
		if err := enc.Encode(resp); err != nil {
			return err
		}
	}
}

// Remote is a worker process started from this binary ("herald-bench
// worker"); calls are serialised.
type Remote struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	dec *json.Decoder
	mu  sync.Mutex
}

// PID implements Worker.
func (w *Remote) PID() int { return w.cmd.Process.Pid }

// StartRemote starts "<self> worker --source-ip ip,... [--ack]".
func StartRemote(self string, sourceIPs []string, ack bool) (*Remote, error) {
	args := []string{"worker", "--source-ip", strings.Join(sourceIPs, ",")}
	if ack {
		args = append(args, "--ack")
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	return &Remote{cmd: cmd, in: in, dec: json.NewDecoder(bufio.NewReaderSize(out, 1<<20))}, nil
}

func (r *Remote) call(req request) (response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := r.in.Write(append(b, '\n')); err != nil {
		return response{}, fmt.Errorf("worker %d: %w", r.cmd.Process.Pid, err)
	}
	var resp response
	if err := r.dec.Decode(&resp); err != nil {
		return response{}, fmt.Errorf("worker %d: %w", r.cmd.Process.Pid, err)
	}
	if resp.Err != "" {
		return resp, errors.New(resp.Err)
	}
	return resp, nil
}

// Connect implements Worker.
func (r *Remote) Connect(_ context.Context, s Spec) (Counters, error) {
	resp, err := r.call(request{Op: "connect", Spec: &s})
	if resp.Counters == nil {
		return Counters{}, err
	}
	return *resp.Counters, err
}

// Counters implements Worker.
func (r *Remote) Counters(context.Context) (Counters, error) {
	resp, err := r.call(request{Op: "counters"})
	if err != nil || resp.Counters == nil {
		return Counters{}, err
	}
	return *resp.Counters, nil
}

// Churn implements Worker.
func (r *Remote) Churn(_ context.Context, fraction float64, pause time.Duration) (int, error) {
	resp, err := r.call(request{Op: "churn", Fraction: fraction, Pause: pause})
	return resp.N, err
}

// Receipts implements Worker.
func (r *Remote) Receipts(context.Context) (Receipts, error) {
	resp, err := r.call(request{Op: "receipts"})
	if err != nil || resp.Receipts == nil {
		return Receipts{}, err
	}
	return *resp.Receipts, nil
}

// Latencies implements Worker.
func (r *Remote) Latencies(context.Context) ([]int64, error) {
	resp, err := r.call(request{Op: "latencies"})
	return resp.Latencies, err
}

// Close implements Worker.
func (r *Remote) Close() error {
	_, _ = r.call(request{Op: "close"})
	_ = r.in.Close()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		return <-done
	}
}

// SourceIPs returns n loopback source addresses, 127.0.0.2 upward (then
// 127.0.1.1 to 127.0.1.250, and so on: never .0, never 127.0.0.1, where
// the servers listen), so each worker has its own ephemeral ports.
func SourceIPs(n int) []string {
	out := make([]string, n)
	for i := range out {
		k := i + 1
		out[i] = fmt.Sprintf("127.0.%d.%d", k/250, k%250+1)
	}
	return out
}
