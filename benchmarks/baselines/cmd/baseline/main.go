// Command baseline runs one reference WebSocket server for Herald's benchmark
// suite:
//
//	baseline --lib gorilla|gobwas|gws|nbio --addr 127.0.0.1:0
//
// Its first line on stdout is "listening on HOST:PORT". It serves GET /ws,
// POST /broadcast and GET /stats (see package baselines) until SIGTERM or
// SIGINT, then closes the listener and every connection and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"

	"github.com/heraldpush/herald/benchmarks/baselines"
	"github.com/heraldpush/herald/benchmarks/baselines/gobwasepoll"
	"github.com/heraldpush/herald/benchmarks/baselines/gorilla"
	"github.com/heraldpush/herald/benchmarks/baselines/gws"
	"github.com/heraldpush/herald/benchmarks/baselines/nbio"
)

// shutdownTimeout bounds the close of every connection on a signal.
const shutdownTimeout = 10 * time.Second

// libs maps --lib to the constructor of that library's server.
var libs = map[string]func(baselines.Config) (baselines.Server, error){
	"gorilla": gorilla.New,
	"gobwas":  gobwasepoll.New,
	"gws":     gws.New,
	"nbio":    nbio.New,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it serves until ctx ends and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	names := make([]string, 0, len(libs))
	for name := range libs {
		names = append(names, name)
	}
	sort.Strings(names)

	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := baselines.DefaultConfig()
	lib := fs.String("lib", "", "library: "+strings.Join(names, "|"))
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address; port 0 picks a free port")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	newServer, ok := libs[*lib]
	if !ok {
		fmt.Fprintf(stderr, "baseline: --lib must be one of %s\n", strings.Join(names, ", "))
		return 2
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.Logger = log
	// nbio logs to stdout at Info through a global logger; keep stdout for
	// the address line and stderr for errors only.
	nbiolog.Output = stderr
	nbiolog.SetLevel(nbiolog.LevelError)

	srv, err := newServer(cfg)
	if err != nil {
		log.Error("new server", "lib", *lib, "err", err)
		return 1
	}
	if err := srv.Start(); err != nil {
		log.Error("start", "lib", *lib, "err", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening on %s\n", srv.Addr())

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown", "lib", *lib, "err", err)
		return 1
	}
	return 0
}
