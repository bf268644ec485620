package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/heraldpush/herald/benchmarks/loadgen"
)

// baselines are the reference servers of benchmarks/baselines.
var baselines = []string{"gorilla", "gobwas", "gws", "nbio"}

// compare runs idle and broadcast against Herald and every baseline at
// each connection count, in one run, and prints Herald's figures (medians
// over rounds, since one broadcast run on a shared machine varies by
// ±20%) as ratios to each baseline's.
func compare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := scenarioFlags("compare", stderr)
	targets := fs.String("targets", "herald,"+strings.Join(baselines, ","), "servers to compare, comma-separated")
	rounds := fs.Int("rounds", 3, "rounds: each runs every target in turn; figures are medians over rounds")
	for name, def := range map[string]string{"conns": "5000,15000", "duration": "3s"} {
		f := fs.Lookup(name)
		f.DefValue = def
		_ = f.Value.Set(def)
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	conns, err := connList(c.conns)
	if err != nil {
		fmt.Fprintln(stderr, "herald-bench:", err)
		return errUsage
	}
	if c.urls != "" {
		fmt.Fprintln(stderr, "herald-bench: compare starts its own servers; --url is for the scenarios")
		return errUsage
	}
	if err := c.prepare(ctx, stderr, true, false); err != nil {
		return err
	}
	defer os.RemoveAll(c.p.Dir)
	type key struct {
		scenario, target string
		conns            int
	}
	results := map[key][]*loadgen.Result{}
	var failed []error
	for round := 1; round <= max(*rounds, 1); round++ {
		for _, n := range conns {
			for _, t := range strings.Split(*targets, ",") {
				for _, sc := range []string{loadgen.Idle, loadgen.Broadcast} {
					p := c.p
					p.Scenario, p.Target, p.Conns = sc, t, n
					fmt.Fprintf(stderr, "\n== round %d of %d: %s, %s, %d connections\n", round, *rounds, sc, t, n)
					res, err := loadgen.Run(ctx, p, stderr)
					if res != nil {
						path, serr := save(c.out, res)
						if serr != nil {
							return serr
						}
						summary(stderr, res, path)
						results[key{sc, t, n}] = append(results[key{sc, t, n}], res)
					}
					if err != nil {
						failed = append(failed, fmt.Errorf("%s/%s/%d: %w", sc, t, n, err))
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
		}
	}
	// med is the median of a figure over the rounds (NaN with no result).
	med := func(sc, t string, n int, fig string) float64 {
		var vs []float64
		for _, r := range results[key{sc, t, n}] {
			if v, ok := r.Figures[fig]; ok {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return math.NaN()
		}
		sort.Float64s(vs)
		return vs[len(vs)/2]
	}
	lost := func(t string, n int) int64 {
		var sum int64
		for _, sc := range []string{loadgen.Idle, loadgen.Broadcast} {
			for _, r := range results[key{sc, t, n}] {
				sum += r.Lost
			}
		}
		return sum
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Medians over %d rounds.\n", *rounds)
	for _, n := range conns {
		fmt.Fprintf(tw, "\n%d connections\tRSS/conn\theap/conn\tgoroutines/conn\tbroadcast: last delivery\tdeliveries/s\tserver CPU µs/delivery\tlost\n", n)
		for _, t := range strings.Split(*targets, ",") {
			fmt.Fprintf(tw, "%s\t%.2f KB\t%.2f KB\t%.3f\t%.1f ms\t%.0f\t%.1f\t%d\n", t,
				med(loadgen.Idle, t, n, "rss_per_conn_bytes")/1024, med(loadgen.Idle, t, n, "heap_per_conn_bytes")/1024,
				med(loadgen.Idle, t, n, "goroutines_per_conn"), med(loadgen.Broadcast, t, n, "last_delivery_p50_ms"),
				med(loadgen.Broadcast, t, n, "deliveries_per_sec"), med(loadgen.Broadcast, t, n, "server_cpu_sec_per_million"), lost(t, n))
		}
		fmt.Fprintf(tw, "herald as a ratio of\tRSS/conn\t\t\tlast delivery\t\tCPU/delivery\n")
		for _, t := range strings.Split(*targets, ",") {
			if t == "herald" {
				continue
			}
			ratio := func(sc, fig string) float64 { return med(sc, "herald", n, fig) / med(sc, t, n, fig) }
			fmt.Fprintf(tw, "  %s\t%.2f\t\t\t%.2f\t\t%.2f\n", t, ratio(loadgen.Idle, "rss_per_conn_bytes"),
				ratio(loadgen.Broadcast, "last_delivery_p50_ms"), ratio(loadgen.Broadcast, "server_cpu_sec_per_million"))
		}
	}
	tw.Flush()
	return errors.Join(failed...)
}
