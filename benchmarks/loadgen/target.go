package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldpush/herald/benchmarks/proc"
	"github.com/heraldpush/herald/node/auth"
)

// Server is one server process under test: a Herald node or a baseline.
type Server struct {
	Kind    string // "herald", or a baseline library: gorilla, gobwas, gws, nbio
	Name    string // node ID for Herald nodes
	HTTP    string // http://host:port
	WS      string // ws://host:port/ws
	Gossip  string // Herald: gossip address
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	log     *lineLog

	secret   []byte // Herald: JWT secret
	apiKey   string // Herald: API key
	external bool   // not started by the tool: figures from /metrics

	posterOnce sync.Once
	poster     *poster
	posterErr  error
	seq        atomic.Int64
	retries    atomic.Int64 // POSTs repeated after a 5xx or a broken connection
	keys       bool         // Herald messages carry an idempotency key
	keyPrefix  string       // idempotency keys: unique to this Server value
	client     *http.Client
}

// PID returns the server's process ID (0 for an external server).
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Token returns a connection token for user (baselines take any).
func (s *Server) Token(user string) string {
	if s.secret == nil {
		return "x"
	}
	tok, _ := auth.Mint(s.secret, user, 24*time.Hour)
	return tok
}

// HeraldOptions configure Herald nodes started by the load tool.
type HeraldOptions struct {
	Bin     string   // the herald binary
	Dir     string   // working directory for data dirs
	Secret  []byte   // JWT secret
	APIKey  string   //
	Cluster []byte   // cluster secret
	Extra   []string // more flags
	IP      string   // loopback address to bind (127.0.0.1 default)
}

var startedRE = regexp.MustCompile(`msg="herald node started".* addr=([0-9.:]+).* gossip=([0-9.:]*)`)

// StartHerald starts one Herald node (its flags: free ports on o.IP,
// warn-level logs, data in a directory of its own) and waits until it
// serves.
func StartHerald(ctx context.Context, o HeraldOptions, name string, join []string, extra ...string) (*Server, error) {
	ip := o.IP
	if ip == "" {
		ip = "127.0.0.1"
	}
	dir := filepath.Join(o.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	args := []string{"serve", "--node-id", name, "--addr", ip + ":0", "--gossip-addr", ip + ":0", "--rpc-addr", ip + ":0",
		"--data-dir", dir, "--jwt-secret", string(o.Secret), "--api-key", o.APIKey, "--cluster-secret", string(o.Cluster),
		"--log-level", "info"}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(append(args, o.Extra...), extra...)
	s := &Server{Kind: "herald", Name: name, secret: o.Secret, apiKey: o.APIKey}
	m, err := s.start(ctx, o.Bin, args, startedRE, true)
	if err != nil {
		return nil, err
	}
	s.HTTP, s.WS, s.Gossip = "http://"+m[1], "ws://"+m[1]+"/ws", m[2]
	return s, nil
}

var listeningRE = regexp.MustCompile(`listening on ([0-9.:]+)`)

// StartBaseline starts a baseline server of the benchmarks/baselines module.
func StartBaseline(ctx context.Context, bin, lib, ip string) (*Server, error) {
	if ip == "" {
		ip = "127.0.0.1"
	}
	s := &Server{Kind: lib, Name: lib}
	m, err := s.start(ctx, bin, []string{"--lib", lib, "--addr", ip + ":0"}, listeningRE, false)
	if err != nil {
		return nil, err
	}
	s.HTTP, s.WS = "http://"+m[1], "ws://"+m[1]+"/ws"
	return s, nil
}

// start runs the process and waits for the line matching re on stderr
// (Herald) or stdout (baselines).
func (s *Server) start(ctx context.Context, bin string, args []string, re *regexp.Regexp, fromStderr bool) ([]string, error) {
	s.client = newHTTPClient()
	s.cmd = exec.Command(bin, args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tool
	s.log = &lineLog{}
	var out io.ReadCloser
	var err error
	if fromStderr {
		out, err = s.cmd.StderrPipe()
	} else {
		out, err = s.cmd.StdoutPipe()
		s.cmd.Stderr = s.log
	}
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s.done = make(chan struct{})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.log.add(line)
			if m := re.FindStringSubmatch(line); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	select {
	case m := <-found:
		return m, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited at start: %v\n%s", s.Name, s.waitErr, s.log.tail(20))
	case <-ctx.Done():
		s.Kill()
		return nil, fmt.Errorf("%s did not start: %w", s.Name, ctx.Err())
	case <-time.After(60 * time.Second):
		s.Kill()
		return nil, fmt.Errorf("%s did not start within 60 s\n%s", s.Name, s.log.tail(20))
	}
}

// Stop sends SIGTERM and waits (then SIGKILL after timeout).
func (s *Server) Stop(timeout time.Duration) error {
	if s.poster != nil {
		s.poster.close()
	}
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.Kill()
		return fmt.Errorf("%s did not stop within %v", s.Name, timeout)
	}
	var ee *exec.ExitError
	if s.waitErr != nil && !errors.As(s.waitErr, &ee) {
		return s.waitErr
	}
	if ee != nil && ee.ExitCode() != 0 {
		return fmt.Errorf("%s exited with %d\n%s", s.Name, ee.ExitCode(), s.log.tail(10))
	}
	return nil
}

// Kill kills the process and waits.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Usage is a server's resource use at one instant.
type Usage struct {
	RSS        int64         `json:"rss_bytes"`
	CPU        time.Duration `json:"cpu_ns"`
	HeapInuse  int64         `json:"heap_inuse_bytes"`
	Goroutines int64         `json:"goroutines"`
}

// Usage reads RSS and CPU from /proc and heap and goroutines from the
// server (Herald's /metrics, a baseline's /stats); an external server's
// all come from its /metrics.
func (s *Server) Usage(ctx context.Context, settle bool) (Usage, error) {
	if s.external {
		return s.remoteUsage(ctx, settle)
	}
	var u Usage
	var err error
	if settle {
		u.RSS, err = proc.SettledRSS(s.PID(), 10*time.Second)
	} else {
		u.RSS, err = proc.RSS(s.PID())
	}
	if err != nil {
		return u, err
	}
	if u.CPU, err = proc.CPU(s.PID()); err != nil {
		return u, err
	}
	if s.Kind == "herald" {
		m, err := s.metrics(ctx)
		if err != nil {
			return u, err
		}
		u.HeapInuse, u.Goroutines = int64(m["go_memstats_heap_inuse_bytes"]), int64(m["go_goroutines"])
		return u, nil
	}
	var st struct {
		Goroutines int64 `json:"goroutines"`
		HeapInuse  int64 `json:"heap_inuse"`
	}
	if err := s.getJSON(ctx, "/stats", &st); err != nil {
		return u, err
	}
	u.HeapInuse, u.Goroutines = st.HeapInuse, st.Goroutines
	return u, nil
}

// Connections returns the server's open connection count.
func (s *Server) Connections(ctx context.Context) (int, error) {
	if s.Kind == "herald" {
		m, err := s.metrics(ctx)
		return int(m["herald_edge_connections"]), err
	}
	var st struct{ Conns int }
	err := s.getJSON(ctx, "/stats", &st)
	return st.Conns, err
}

// Quantiles estimates quantiles of a Herald histogram from its buckets
// (the upper bound of the bucket holding each quantile), in milliseconds.
func (s *Server) Quantiles(ctx context.Context, name string, qs ...float64) ([]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.HTTP+"/metrics", nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		i := strings.Index(rest, `"}`)
		if i < 0 {
			continue
		}
		le, err1 := strconv.ParseFloat(rest[:i], 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(rest[i+2:]), 64)
		if err1 == nil && err2 == nil {
			bs = append(bs, bucket{le, n})
		}
		if strings.HasPrefix(rest, "+Inf") {
			n, _ := strconv.ParseFloat(strings.TrimSpace(rest[len(`+Inf"}`):]), 64)
			bs = append(bs, bucket{math.Inf(1), n})
		}
	}
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return nil, fmt.Errorf("no samples of %s", name)
	}
	total := bs[len(bs)-1].n
	out := make([]float64, len(qs))
	for i, q := range qs {
		for _, b := range bs {
			if b.n >= q*total {
				out[i] = b.le * 1000
				break
			}
		}
	}
	return out, nil
}

// metrics scrapes the unlabelled samples of Herald's /metrics.
func (s *Server) metrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.HTTP+"/metrics", nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		if f := strings.Fields(line); len(f) == 2 {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}

func (s *Server) getJSON(ctx context.Context, path string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.HTTP+path, nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Post sends one message carrying the send time in data.t and returns its
// ID: to users, or to everyone when users is nil.
func (s *Server) Post(ctx context.Context, users []string) (string, error) {
	n := s.seq.Add(1)
	now := time.Now().UnixNano()
	var body []byte
	var path string
	s.posterOnce.Do(func() {
		s.poster, s.posterErr = newPoster(s.HTTP, s.apiKey)
		s.keyPrefix = randomHex(8)
	})
	if s.posterErr != nil {
		return "", s.posterErr
	}
	if s.Kind == "herald" {
		// With keys, a retried POST (see postRetrying) cannot store the
		// message twice. Without, a retry after a 5xx that had in fact
		// stored the message delivers a copy under an ID the check never
		// expects, and so ignores.
		path = "/v1/messages"
		key := ""
		if s.keys {
			key = fmt.Sprintf(`,"key":"%s-%d"`, s.keyPrefix, n)
		}
		if users == nil {
			body = fmt.Appendf(nil, `{"broadcast":true,"data":{"t":%d,"n":%d},"ttl":"1h"%s}`, now, n, key)
		} else {
			to, _ := json.Marshal(users)
			body = fmt.Appendf(nil, `{"to":%s,"data":{"t":%d,"n":%d},"ttl":"1h"%s}`, to, now, n, key)
		}
	} else {
		if users != nil {
			return "", errors.New("baselines only broadcast")
		}
		path = "/broadcast"
		body = fmt.Appendf(nil, `{"type":"message","id":"b-%d","data":{"t":%d,"n":%d},"ts":%d}`, n, now, n, now/1e6)
	}
	status, b, err := s.postRetrying(ctx, path, body)
	if err != nil {
		return "", err
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		return "", fmt.Errorf("POST %s: %d %s", path, status, b)
	}
	if s.Kind != "herald" {
		return fmt.Sprintf("b-%d", n), nil
	}
	var r struct{ ID string }
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("POST answer %q", b)
	}
	return r.ID, nil
}

// PostAttempts bounds how often one message is posted before the run
// fails; the waits between attempts grow from 50 ms to 2 s.
const PostAttempts = 8

// postRetrying posts body, again after a 5xx answer or a transport error,
// as a publisher would: Herald's 503 says nothing was accepted, and a keyed
// message cannot be stored twice anyway. Baselines' broadcasts are not
// retried.
func (s *Server) postRetrying(ctx context.Context, path string, body []byte) (int, []byte, error) {
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		status, b, err := s.poster.post(ctx, path, body)
		if (err == nil && status < 500) || s.Kind != "herald" || attempt == PostAttempts || ctx.Err() != nil {
			return status, b, err
		}
		s.retries.Add(1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// lineLog keeps a server's last log lines for error reports.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	if len(l.lines) > 200 {
		l.lines = l.lines[100:]
	}
	l.mu.Unlock()
}

func (l *lineLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		l.add(line)
	}
	return len(p), nil
}

func (l *lineLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}
