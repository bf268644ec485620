// Command herald-devmongo runs a MongoDB wire-protocol server for trying a
// Herald cluster out on one machine without installing MongoDB: an
// embedded FerretDB 1.24 storing its data in SQLite files.
//
//	herald-devmongo [--addr 127.0.0.1:27017] [--dir herald-devmongo-data]
//
// It is for development and benchmarks only: FerretDB 1.x scans a whole
// collection for most queries, so replays slow down as messages pile up.
// Use a real MongoDB replica set in production.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:27017", "`address` to listen on")
	dir := flag.String("dir", "herald-devmongo-data", "`directory` for the SQLite files")
	flag.Parse()
	if err := run(*addr, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "herald-devmongo:", err)
		os.Exit(1)
	}
}

func run(addr, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	// FerretDB logs every unsupported request (such as Herald's TTL index,
	// which it refuses and Herald does without) at warn level: errors only.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + filepath.ToSlash(abs) + "/",
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("start FerretDB: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "herald-devmongo: MongoDB wire protocol on %s (data in %s); Ctrl-C stops it\n", f.MongoDBURI(), abs)
	return f.Run(ctx)
}
