package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/benchmarks/loadgen"
	procfs "github.com/heraldpush/herald/benchmarks/proc"
)

var (
	faultsFlag = flag.String("faults", strings.Join(FaultNames, ","), "chaos: faults to run, in order (or random)")
	report     = flag.String("chaos-report", "", "chaos: write the report as JSON to this file")
	keepDir    = flag.String("chaos-dir", "", "chaos: keep the processes' data and logs in this directory")
	freeze     = flag.Duration("chaos-freeze", 5*time.Second, "chaos: how long the freeze fault freezes a node")
	soak       = flag.Duration("chaos-soak", 0, "chaos: run TestChaosSoak, random mixed faults, for this long")
	seed       = flag.Uint64("chaos-seed", 0, "chaos: seed of the random choices (0: random; the report says which)")
)

// TestChaosShort runs the drill with every fault once, briefly: a real
// three-node cluster, Redis, FerretDB and 150 clients, about two minutes.
// It fails if a single accepted message did not reach a device.
func TestChaosShort(t *testing.T) {
	runDrill(t, Config{
		Nodes: 3, Users: 100, Devices: 150, Rate: 30, BroadcastEvery: 30,
		Faults: strings.Split(*faultsFlag, ","), Freeze: *freeze, Settle: 60 * time.Second,
	}, 20*time.Minute)
}

// TestChaosSoak runs random faults, one or two at once, for -chaos-soak
// (make chaos): the long randomized run of docs/RELIABILITY.md.
func TestChaosSoak(t *testing.T) {
	if *soak <= 0 {
		t.Skip("set -chaos-soak (make chaos)")
	}
	runDrill(t, Config{
		Nodes: 3, Users: 100, Devices: 150, Rate: 30, BroadcastEvery: 30,
		Faults: []string{"random"}, Duration: *soak, FreezeMax: 15 * time.Second, Settle: 90 * time.Second,
	}, *soak+30*time.Minute)
}

// runDrill runs a drill with cfg and fails the test on any loss.
func runDrill(t *testing.T, cfg Config, timeout time.Duration) {
	if testing.Short() {
		t.Skip("the chaos drill takes minutes")
	}
	if raceEnabled {
		t.Skip("the drill runs without -race (.ci/test.sh runs it after the race suite)")
	}
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (make test installs it)")
	}
	if _, err := procfs.RaiseFileLimit(); err != nil {
		t.Logf("raising the open-file limit: %v", err)
	}
	wd, _ := os.Getwd()
	root, err := loadgen.RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	bins, err := loadgen.Build(context.Background(), root, loadgen.BuildOptions{Dir: t.TempDir(), Chaos: true, DevMongo: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if *keepDir != "" {
		dir = *keepDir
		_ = os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg.Herald, cfg.DevMongo, cfg.RedisServer, cfg.Dir = bins.Chaos, bins.DevMongo, redis, dir
	cfg.Seed, cfg.Log = *seed, testLog{t}
	r, err := Run(ctx, cfg)
	if err != nil {
		dumpLogs(t, dir)
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	if *report != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(*report, b, 0o644); err != nil {
			t.Error(err)
		}
	}
	if r.Accepted < 1000 {
		t.Errorf("only %d messages accepted: the drill exercised too little", r.Accepted)
	}
	if r.Lost > 0 {
		dumpLogs(t, dir)
		t.Errorf("%d of %d deliveries lost", r.Lost, r.Deliveries)
	}
	for _, f := range r.Faults {
		if f.DeliveredAfter < 0 {
			t.Errorf("after %s, not everything was delivered within the settle time", f.Name)
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dumpLogs prints the tail of each process's log, for a failure.
func dumpLogs(t *testing.T, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- %s (last lines)\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
}
