// Command herald runs Herald, the WebSocket push server.
//
//	herald [serve] [flags]     run a node (all roles, embedded storage by default)
//	herald token --user ID     print a development token
//	herald listen --user ID    print what a user receives
//	herald version             print the version
//
// Run "herald serve --help" for every setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, stderr, getenv)
	case "token":
		err = token(args, stdout, stderr, getenv)
	case "listen":
		err = listen(ctx, args, stdout, stderr, getenv)
	case "version":
		fmt.Fprintln(stdout, "herald", version())
	case "help":
		fmt.Fprint(stdout, topUsage)
	default:
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", cmd, topUsage)
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
	fmt.Fprintln(stderr, "herald:", err)
	return 1
}

// errUsage marks a command-line mistake already reported by the flag set.
var errUsage = errors.New("usage")

const topUsage = `Herald pushes messages from your backend to your users' browsers and apps.

Usage:
  herald [serve] [flags]     run a node (default: all roles, embedded storage, :8080)
  herald token --user ID     print a token for a user (development)
  herald listen --user ID    connect as a user and print what arrives (development)
  herald version             print the version

Run "herald <command> --help" for a command's flags.
`

// version is set at build time with -ldflags "-X main.buildVersion=v1.2.3",
// else taken from the module build info.
var buildVersion string

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
		return v
	}
	return "devel"
}
