package benchmarks

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/benchmarks/loadgen"
	"github.com/heraldpush/herald/benchmarks/proc"
)

var (
	benchConns = flag.Int("conns", 15000, "benchmarks: client connections")
	benchRate  = flag.Float64("rate", 5000, "benchmarks: unicast messages per second")
	benchDur   = flag.Duration("duration", 15*time.Second, "benchmarks: unicast sending time")
	verbose    = flag.Bool("progress", false, "print the scenarios' progress")
)

var (
	buildOnce sync.Once
	bins      loadgen.Binaries
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if _, err := proc.RaiseFileLimit(); err != nil {
		println("raising the open-file limit:", err.Error())
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds herald and its helpers once for the test binary.
func binaries(t testing.TB) loadgen.Binaries {
	t.Helper()
	buildOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			buildErr = err
			return
		}
		root, err := loadgen.RepoRoot(wd)
		if err != nil {
			buildErr = err
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "herald-bench-bin-"); buildErr != nil {
			return
		}
		var log strings.Builder
		bins, buildErr = loadgen.Build(context.Background(), root, loadgen.BuildOptions{
			Dir: buildDir, DevMongo: true, Baselines: true, Bench: true, Log: &log})
		if buildErr != nil {
			buildErr = fmtErr(buildErr, log.String())
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return bins
}

type buildError struct {
	err error
	log string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.log }
func (e *buildError) Unwrap() error { return e.err }

func fmtErr(err error, log string) error { return &buildError{err, log} }

// params fills in the binaries and a scratch directory.
func params(t testing.TB, p loadgen.Params) loadgen.Params {
	b := binaries(t)
	p.HeraldBin, p.DevMongoBin, p.BaselineBin, p.Self = b.Herald, b.DevMongo, b.Baseline, b.Bench
	p.Dir = t.TempDir()
	if p.Target == "" {
		p.Target = "herald"
	}
	if p.ConnectRate == 0 {
		p.ConnectRate = 5000
	}
	p.Ack = true
	return p
}

func progress(t testing.TB) io.Writer {
	if *verbose {
		return os.Stderr
	}
	return &tlog{t: t}
}

// tlog keeps a scenario's progress in the test log (shown on failure or
// with -v).
type tlog struct {
	t  testing.TB
	mu sync.Mutex
}

func (l *tlog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// required are the figures each scenario's result must carry.
var required = map[string][]string{
	loadgen.Idle:      {"rss_per_conn_bytes", "heap_per_conn_bytes", "goroutines_per_conn", "connects_per_sec", "idle_cpu_percent"},
	loadgen.Unicast:   {"deliveries_per_sec", "latency_p50_ms", "latency_p99_ms", "latency_p999_ms", "latency_max_ms", "server_cpu_sec_per_million"},
	loadgen.Broadcast: {"last_delivery_p50_ms", "deliveries_per_sec"},
	loadgen.Churn:     {"reconnects", "reconnects_per_sec", "latency_p99_ms"},
	loadgen.Cluster:   {"cross_node_share", "latency_p99_ms", "broadcast_last_delivery_p50_ms", "rss_per_conn_bytes"},
}

// TestSmoke runs every scenario once at a small size: zero lost
// deliveries and a complete JSON result, no speed asserted.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and thousands of connections")
	}
	cases := []struct {
		name string
		p    loadgen.Params
	}{
		// Two worker processes, each on its own source address.
		{"idle", loadgen.Params{Scenario: loadgen.Idle, Conns: 2000, Duration: 2 * time.Second, Workers: 2}},
		{"unicast", loadgen.Params{Scenario: loadgen.Unicast, Conns: 2000, Rate: 500, Duration: 3 * time.Second}},
		{"broadcast", loadgen.Params{Scenario: loadgen.Broadcast, Conns: 2000, Broadcasts: 3}},
		{"churn", loadgen.Params{Scenario: loadgen.Churn, Conns: 2000, Rate: 500, Duration: 4 * time.Second,
			ChurnShare: 0.05, ChurnEvery: 500 * time.Millisecond}},
		{"cluster", loadgen.Params{Scenario: loadgen.Cluster, Conns: 2000, Nodes: 3, Rate: 300, Duration: 3 * time.Second, Broadcasts: 2}},
		// compare's other half: a baseline server through the same code.
		{"baseline", loadgen.Params{Scenario: loadgen.Broadcast, Target: "nbio", Conns: 1000, Broadcasts: 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := loadgen.Run(ctx, params(t, c.p), progress(t))
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			checkResult(t, res)
		})
	}
}

// TestSmokeExternal drives a node the tool did not start (--url), as an
// operator benchmarking a deployed cluster would: figures come from its
// /metrics, tokens from the secret given.
func TestSmokeExternal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and thousands of connections")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := binaries(t)
	node, err := loadgen.StartHerald(ctx, loadgen.HeraldOptions{Bin: b.Herald, Dir: t.TempDir(),
		Secret: []byte("external-secret-of-at-least-32-bytes"), APIKey: "external-api-key-16+", Cluster: []byte("external-cluster-secret-32-bytes-long")}, "ext-1", nil)
	if err != nil {
		t.Fatalf("start herald: %v", err)
	}
	t.Cleanup(func() {
		if err := node.Stop(30 * time.Second); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	p := params(t, loadgen.Params{Scenario: loadgen.Unicast, Conns: 1000, Rate: 300, Duration: 2 * time.Second,
		URLs: []string{node.HTTP}, JWTSecret: "external-secret-of-at-least-32-bytes", APIKey: "external-api-key-16+"})
	res, err := loadgen.Run(ctx, p, progress(t))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	checkResult(t, res)
	if res.Figures["server_cpu_sec_per_million"] <= 0 { // read from the node's /metrics
		t.Errorf("no server CPU figure from /metrics: %v", res.Figures)
	}

	// A wrong secret is refused up front, not reported as lost messages.
	p.JWTSecret = ""
	if _, err := loadgen.Run(ctx, p, progress(t)); err == nil {
		t.Fatal("run against a Herald node without --jwt-secret succeeded")
	}
}

// checkResult asserts what every run must hold: nothing lost, every
// expected delivery made, and a JSON document with the figures of its
// scenario.
func checkResult(t *testing.T, res *loadgen.Result) {
	t.Helper()
	if res.Lost != 0 {
		t.Fatalf("lost %d of %d deliveries, e.g. %v\nnotes: %v", res.Lost, res.Expected, res.LostSamples, res.Notes)
	}
	if res.Scenario != loadgen.Idle && (res.Expected == 0 || res.Delivered != res.Expected) {
		t.Fatalf("delivered %d of %d", res.Delivered, res.Expected)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("marshal result: %v", err)
	}
	var doc struct {
		Scenario string             `json:"scenario"`
		Params   map[string]any     `json:"params"`
		Machine  map[string]any     `json:"machine"`
		Go       string             `json:"go_version"`
		Git      string             `json:"git_revision"`
		Figures  map[string]float64 `json:"figures"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, b)
	}
	if doc.Scenario != res.Scenario || doc.Params == nil || doc.Machine == nil || doc.Go == "" || doc.Git == "" {
		t.Fatalf("result lacks its context: %s", b)
	}
	for _, f := range required[res.Scenario] {
		if _, ok := doc.Figures[f]; !ok {
			t.Errorf("result lacks figure %q: %v", f, doc.Figures)
		}
	}
	if res.Scenario == loadgen.Cluster && doc.Figures["cross_node_share"] <= 0 {
		t.Errorf("no message crossed nodes: %v", doc.Figures)
	}
}

// benchScenario runs one scenario at full size and reports its figures.
func benchScenario(b *testing.B, p loadgen.Params, metrics map[string]string) {
	p = params(b, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var res *loadgen.Result
	for b.Loop() { // a scenario is one long run: -benchtime 1x
		var err error
		res, err = loadgen.Run(ctx, p, progress(b))
		if err != nil {
			b.Fatalf("run: %v", err)
		}
	}
	if res == nil {
		return
	}
	for fig, unit := range metrics {
		if v, ok := res.Figures[fig]; ok {
			b.ReportMetric(v, unit)
		}
	}
	b.ReportMetric(float64(res.Lost), "lost")
}

func BenchmarkIdle(b *testing.B) {
	benchScenario(b, loadgen.Params{Scenario: loadgen.Idle, Conns: *benchConns, Duration: 10 * time.Second}, map[string]string{
		"rss_per_conn_bytes": "B-rss/conn", "heap_per_conn_bytes": "B-heap/conn", "goroutines_per_conn": "goroutines/conn",
		"connects_per_sec": "connects/s", "idle_cpu_percent": "%cpu-idle"})
}

func BenchmarkUnicast(b *testing.B) {
	benchScenario(b, loadgen.Params{Scenario: loadgen.Unicast, Conns: *benchConns, Rate: *benchRate, Duration: *benchDur}, unicastMetrics)
}

var unicastMetrics = map[string]string{
	"deliveries_per_sec": "deliveries/s", "latency_p50_ms": "ms-p50", "latency_p99_ms": "ms-p99",
	"latency_p999_ms": "ms-p999", "latency_max_ms": "ms-max", "server_cpu_sec_per_million": "cpu-s/M",
}

func BenchmarkBroadcast(b *testing.B) {
	benchScenario(b, loadgen.Params{Scenario: loadgen.Broadcast, Conns: *benchConns, Broadcasts: 10}, map[string]string{
		"last_delivery_p50_ms": "ms-last-delivery", "deliveries_per_sec": "deliveries/s"})
}

func BenchmarkChurn(b *testing.B) {
	benchScenario(b, loadgen.Params{Scenario: loadgen.Churn, Conns: *benchConns, Rate: *benchRate / 5, Duration: *benchDur,
		ChurnShare: 0.05, ChurnEvery: time.Second}, map[string]string{
		"reconnects_per_sec": "reconnects/s", "replayed_or_repeated": "replayed", "latency_p99_ms": "ms-p99"})
}

func BenchmarkCluster(b *testing.B) {
	m := map[string]string{"cross_node_share": "cross-node-share", "broadcast_last_delivery_p50_ms": "ms-broadcast"}
	for k, v := range unicastMetrics {
		m[k] = v
	}
	benchScenario(b, loadgen.Params{Scenario: loadgen.Cluster, Conns: *benchConns, Nodes: 3, Rate: *benchRate / 2.5,
		Duration: *benchDur, Broadcasts: 5}, m)
}
