package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldpush/herald/benchmarks/loadgen"
	"github.com/heraldpush/herald/benchmarks/proc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usageText)
		return 0
	}
	if _, err := proc.RaiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "herald-bench: raising the open-file limit:", err)
	}
	cmd, args := args[0], args[1:]
	var err error
	switch cmd {
	case loadgen.Idle, loadgen.Unicast, loadgen.Broadcast, loadgen.Churn, loadgen.Cluster:
		err = scenario(ctx, cmd, args, stdout, stderr)
	case "compare":
		err = compare(ctx, args, stdout, stderr)
	case "plot":
		err = plotCmd(args, stdout, stderr)
	case "worker":
		err = worker(ctx, args)
	default:
		fmt.Fprintf(stderr, "herald-bench: unknown command %q\n\n%s", cmd, usageText)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "herald-bench:", err)
	return 1
}

var errUsage = errors.New("usage")

const usageText = `herald-bench runs Herald's benchmark scenarios and checks every delivery.

  herald-bench idle      --conns N                       memory, CPU and connect rate of N idle connections
  herald-bench unicast   --conns N --rate R --duration D  R messages/s to random users; latency from POST to receipt
  herald-bench broadcast --conns N --broadcasts K         K broadcasts to N connections; time to last delivery
  herald-bench churn     --conns N --rate R               unicast while a share of clients reconnects with since
  herald-bench cluster   --conns N --nodes 3              unicast and broadcast across nodes, Redis and MongoDB
  herald-bench compare   --conns 5000,15000               idle and broadcast for Herald and every baseline
  herald-bench plot                                      SVG plots from every JSON result under benchmarks/results

Run "herald-bench <command> --help" for the flags. Results go to benchmarks/results/<command>/.
`

// common are the flags every scenario takes.
type common struct {
	p        loadgen.Params
	out      string
	conns    string
	bins     string
	heraldTo string
	profile  bool
	urls     string
	srcIPs   string
}

func scenarioFlags(name string, stderr io.Writer) (*flag.FlagSet, *common) {
	c := &common{}
	fs := flag.NewFlagSet("herald-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.conns, "conns", "2000", "client `connections` (one user each); compare takes a comma-separated list")
	fs.Float64Var(&c.p.ConnectRate, "connect-rate", 5000, "connections opened per `second`, all workers together (0: unlimited)")
	fs.DurationVar(&c.p.Duration, "duration", 10*time.Second, "idle: how long to measure CPU; unicast, churn, cluster: how long to send")
	fs.Float64Var(&c.p.Rate, "rate", 1000, "unicast, churn, cluster: messages per `second`")
	fs.IntVar(&c.p.Broadcasts, "broadcasts", 10, "broadcast, cluster: how many broadcasts")
	fs.Float64Var(&c.p.ChurnShare, "churn-share", 0.05, "churn: `share` of clients that reconnect each --churn-every")
	fs.DurationVar(&c.p.ChurnEvery, "churn-every", time.Second, "churn: how often a share of clients reconnects")
	fs.IntVar(&c.p.Nodes, "nodes", 3, "cluster: Herald nodes")
	fs.IntVar(&c.p.Workers, "workers", 0, "worker `processes` (0: in-process up to 18,000 connections, else one per 18,000)")
	fs.BoolVar(&c.p.Ack, "ack", true, "clients ack every message, as real clients do")
	fs.BoolVar(&c.p.Keys, "keys", false, "unicast, churn, cluster, broadcast: give every message an idempotency key (costs the store a lookup and a write)")
	fs.StringVar(&c.p.Target, "target", "herald", "server: herald, or a baseline: gorilla, gobwas, gws, nbio")
	fs.StringVar(&c.out, "out", filepath.Join("benchmarks", "results", name), "`directory` for the JSON results (and profiles)")
	fs.StringVar(&c.bins, "bin-dir", "", "`directory` for the built binaries (default: a cache directory)")
	fs.StringVar(&c.heraldTo, "herald-args", "", "extra `flags` for herald serve, space-separated")
	fs.StringVar(&c.urls, "url", "", "measure running servers instead of starting them: comma-separated `http://host:port` of each node (clients use /v1/route to find their node)")
	fs.StringVar(&c.p.JWTSecret, "jwt-secret", os.Getenv("HERALD_JWT_SECRET"), "with --url: the cluster's token `secret` (default $HERALD_JWT_SECRET)")
	fs.StringVar(&c.p.APIKey, "api-key", os.Getenv("HERALD_API_KEY"), "with --url: the cluster's API `key` (default $HERALD_API_KEY)")
	fs.StringVar(&c.p.UserPrefix, "user-prefix", "user-", "user IDs are this `prefix` and a number: give each load machine its own against one cluster")
	fs.StringVar(&c.srcIPs, "source-ips", "", "comma-separated client source `addresses`, shared among the workers (default: 127.0.0.2... for loopback servers, else chosen by the kernel)")
	fs.BoolVar(&c.profile, "profile", false, "take pprof CPU and heap profiles of the Herald nodes while measuring, into the --out directory")
	return fs, c
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func connList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--conns: %q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// prepare builds the binaries and fills in the paths.
func (c *common) prepare(ctx context.Context, stderr io.Writer, needBaselines, needMongo bool) error {
	if c.heraldTo != "" {
		c.p.HeraldArgs = strings.Fields(c.heraldTo)
	}
	c.p.URLs, c.p.SourceIPs = splitList(c.urls), splitList(c.srcIPs)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := loadgen.RepoRoot(wd)
	if err != nil {
		return err
	}
	b, err := loadgen.Build(ctx, root, loadgen.BuildOptions{Dir: c.bins, Baselines: needBaselines, DevMongo: needMongo, Log: stderr})
	if err != nil {
		return err
	}
	c.p.HeraldBin, c.p.BaselineBin, c.p.DevMongoBin = b.Herald, b.Baseline, b.DevMongo
	if c.p.Self, err = os.Executable(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return err
	}
	c.p.Dir = dir
	if c.profile {
		c.p.ProfileDir = c.out
	}
	return os.MkdirAll(c.out, 0o755)
}

func scenario(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs, c := scenarioFlags(name, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	conns, err := connList(c.conns)
	if err != nil || len(conns) != 1 {
		fmt.Fprintln(stderr, "herald-bench: give one --conns for a scenario")
		return errUsage
	}
	c.p.Scenario, c.p.Conns = name, conns[0]
	if err := c.prepare(ctx, stderr, c.p.Target != "herald", name == loadgen.Cluster); err != nil {
		return err
	}
	defer os.RemoveAll(c.p.Dir)
	res, runErr := loadgen.Run(ctx, c.p, stderr)
	if res != nil {
		path, err := save(c.out, res)
		if err != nil {
			return err
		}
		summary(stdout, res, path)
	}
	return runErr
}

// save writes a result as <dir>/<scenario>-<target>-<conns>-<time>.json.
func save(dir string, res *loadgen.Result) (string, error) {
	name := fmt.Sprintf("%s-%s-%d-%s.json", res.Scenario, res.Target, res.Params.Conns, res.Started.Format("20060102T150405"))
	path := filepath.Join(dir, name)
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// summary prints a result for humans.
func summary(w io.Writer, r *loadgen.Result, path string) {
	fmt.Fprintf(w, "\n%s against %s with %d connections (%.0fs, %s, %d CPUs, %s)\n", r.Scenario, r.Target, r.Params.Conns,
		r.Seconds, r.GoVersion, r.Machine.CPUs, r.Machine.CPUModel)
	keys := make([]string, 0, len(r.Figures))
	for k := range r.Figures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-32s %s\n", k, fmtFigure(k, r.Figures[k]))
	}
	fmt.Fprintf(w, "  %-32s %d expected, %d delivered, %d lost, %d duplicates\n", "deliveries", r.Expected, r.Delivered, r.Lost, r.Duplicates)
	if path != "" {
		fmt.Fprintf(w, "  result: %s\n", path)
	}
}

func fmtFigure(k string, v float64) string {
	switch {
	case strings.HasSuffix(k, "_bytes"):
		return fmt.Sprintf("%.0f B (%.2f KB)", v, v/1024)
	case v == float64(int64(v)) && v > 100:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// worker is the hidden subcommand worker processes run.
func worker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("herald-bench worker", flag.ContinueOnError)
	src := fs.String("source-ip", "", "local address to bind")
	ack := fs.Bool("ack", false, "ack messages")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return loadgen.ServeWorker(ctx, os.Stdin, os.Stdout, splitList(*src), *ack)
}
