package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs a run starts, built from the repository.
type Binaries struct {
	Herald   string // cmd/herald
	Chaos    string // cmd/herald built with -tags chaos (fault drills)
	DevMongo string // cmd/herald-devmongo (cluster)
	Baseline string // benchmarks/baselines/cmd/baseline (baseline targets)
	Bench    string // cmd/herald-bench (worker processes), when asked for
}

// BuildOptions say which binaries to build, and where.
type BuildOptions struct {
	Dir       string // output directory (default: <user cache>/herald-bench)
	Chaos     bool
	DevMongo  bool
	Baselines bool
	Bench     bool
	Log       io.Writer // build progress and compiler errors
}

// Build compiles the binaries a run needs from the repository at root.
// go build's cache makes a rebuild of unchanged code quick.
func Build(ctx context.Context, root string, o BuildOptions) (Binaries, error) {
	dir := o.Dir
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir = filepath.Join(cache, "herald-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("build: %w", err)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	b := Binaries{Herald: filepath.Join(dir, "herald")}
	type step struct {
		moduleDir, out, pkg string
		tags                string
	}
	steps := []step{{moduleDir: root, out: b.Herald, pkg: "./cmd/herald"}}
	if o.Chaos {
		b.Chaos = filepath.Join(dir, "herald-chaos")
		steps = append(steps, step{moduleDir: root, out: b.Chaos, pkg: "./cmd/herald", tags: "chaos"})
	}
	if o.DevMongo {
		b.DevMongo = filepath.Join(dir, "herald-devmongo")
		steps = append(steps, step{moduleDir: root, out: b.DevMongo, pkg: "./cmd/herald-devmongo"})
	}
	if o.Baselines {
		b.Baseline = filepath.Join(dir, "baseline")
		steps = append(steps, step{moduleDir: filepath.Join(root, "benchmarks", "baselines"), out: b.Baseline, pkg: "./cmd/baseline"})
	}
	if o.Bench {
		b.Bench = filepath.Join(dir, "herald-bench")
		steps = append(steps, step{moduleDir: root, out: b.Bench, pkg: "./cmd/herald-bench"})
	}
	for _, s := range steps {
		fmt.Fprintf(o.Log, "building %s %s\n", s.pkg, s.tags)
		args := []string{"build", "-o", s.out}
		if s.tags != "" {
			args = append(args, "-tags", s.tags)
		}
		cmd := exec.CommandContext(ctx, "go", append(args, s.pkg)...)
		cmd.Dir = s.moduleDir
		cmd.Stdout, cmd.Stderr = o.Log, o.Log
		if err := cmd.Run(); err != nil {
			return b, fmt.Errorf("go build %s (in %s): %w", s.pkg, s.moduleDir, err)
		}
	}
	return b, nil
}

// ErrNoRepo is returned by RepoRoot outside a Herald checkout.
var ErrNoRepo = errors.New("not inside the Herald repository (herald-bench builds herald from it)")

// RepoRoot finds the Herald repository at or above dir.
func RepoRoot(dir string) (string, error) {
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/heraldpush/herald\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoRepo
		}
		dir = parent
	}
}
