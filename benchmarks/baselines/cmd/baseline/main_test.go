package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var listening = regexp.MustCompile(`^listening on 127\.0\.0\.1:[0-9]+$`)

// TestRun serves each library in-process until the context ends.
func TestRun(t *testing.T) {
	for name := range libs {
		t.Run(name, func(t *testing.T) {
			if raceEnabled && name == "nbio" {
				t.Skip("nbio's accept-to-epoll handoff is invisible to -race; TestSignal runs it without")
			}
			ignore := goleak.IgnoreCurrent()
			defer goleak.VerifyNone(t, ignore)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			outR, outW := io.Pipe()
			var stderr strings.Builder
			code := make(chan int, 1)
			go func() {
				code <- run(ctx, []string{"--lib", name, "--addr", "127.0.0.1:0"}, outW, &stderr)
				_ = outW.Close()
			}()
			line, err := bufio.NewReader(outR).ReadString('\n')
			if err != nil {
				t.Fatalf("first stdout line: %v (stderr %q)", err, stderr.String())
			}
			line = strings.TrimSuffix(line, "\n")
			if !listening.MatchString(line) {
				t.Fatalf("first stdout line %q, want %s", line, listening)
			}
			go func() { _, _ = io.Copy(io.Discard, outR) }()
			checkStats(t, strings.TrimPrefix(line, "listening on "))
			cancel()
			if c := <-code; c != 0 {
				t.Fatalf("run returned %d, want 0 (stderr %q)", c, stderr.String())
			}
			if stderr.Len() != 0 {
				t.Errorf("stderr not empty: %q", stderr.String())
			}
		})
	}
}

// TestSignal builds the binary (without -race) and checks each library
// prints its address first and exits 0 on SIGTERM and SIGINT.
func TestSignal(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "baseline")
	goBin := "go" // the go command that runs these tests is on PATH
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for name := range libs {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			t.Run(name+"/"+sig.String(), func(t *testing.T) {
				cmd := exec.Command(bin, "--lib", name, "--addr", "127.0.0.1:0")
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = cmd.Process.Kill() }()
				line, err := bufio.NewReader(out).ReadString('\n')
				if err != nil {
					t.Fatalf("first stdout line: %v (stderr %q)", err, stderr.String())
				}
				line = strings.TrimSuffix(line, "\n")
				if !listening.MatchString(line) {
					t.Fatalf("first stdout line %q, want %s", line, listening)
				}
				checkStats(t, strings.TrimPrefix(line, "listening on "))
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("exit: %v (stderr %q)", err, stderr.String())
					}
				case <-time.After(15 * time.Second):
					t.Fatal("no exit 15 s after the signal")
				}
				if stderr.Len() != 0 {
					t.Errorf("stderr not empty: %q", stderr.String())
				}
			})
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--lib", "nope"}, {}, {"--bogus"}} {
		var out, errOut strings.Builder
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) wrote stdout %q", args, out.String())
		}
	}
}

func checkStats(t *testing.T, addr string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + addr + "/stats")
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	defer resp.Body.Close()
	var s map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("stats: %v", err)
	}
	for _, k := range []string{"conns", "goroutines", "heap_inuse", "heap_alloc"} {
		if _, ok := s[k]; !ok {
			t.Errorf("stats lacks %q: %v", k, s)
		}
	}
}
