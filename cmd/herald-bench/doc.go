// Command herald-bench is Herald's benchmark suite: it runs a scenario
// against Herald (or a baseline server), checks every delivery while it
// measures, and writes one JSON document per run to
// benchmarks/results/<command>/.
//
//	herald-bench idle      --conns 15000          memory and CPU per idle connection
//	herald-bench unicast   --conns 15000 --rate 5000 --duration 20s
//	herald-bench broadcast --conns 15000 --broadcasts 10
//	herald-bench churn     --conns 5000 --rate 1000 --churn-share 0.05
//	herald-bench cluster   --conns 15000 --nodes 3 --rate 2000
//	herald-bench compare   --conns 5000,15000     idle and broadcast: Herald vs the baselines, 3 rounds
//	herald-bench plot      [--in benchmarks/results] [--out benchmarks/results]
//
// Every scenario takes --profile (pprof CPU and heap profiles of the
// Herald nodes while measuring). It builds herald, herald-devmongo and the
// baselines from this checkout at start (run it from the repository; go's
// build cache makes a rebuild quick). Past 18,000 connections it
// starts worker processes of itself, each with its own source address
// (127.0.0.2, 127.0.0.3, ...). A run that lost a delivery exits 1.
package main
