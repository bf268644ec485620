package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/storage/mongo/mongotest"
	"github.com/heraldpush/herald/storage/redis/redistest"
)

func TestFlagPrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "herald.conf")
	os.WriteFile(cfgFile, []byte("# comment\naddr = :7000\ndata-dir = \"/from/file\"\nroles=push\n"), 0o600)
	env := map[string]string{"HERALD_DATA_DIR": "/from/env", "HERALD_CONFIG": cfgFile}
	fs, s := serveFlags(io.Discard)
	if err := parseFlags(fs, []string{"--roles", "collect"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	// flag beats env beats file beats default
	if s.roles != "collect" || s.dataDir != "/from/env" || s.addr != ":7000" || s.logLevel != "info" {
		t.Fatalf("got roles=%q data-dir=%q addr=%q log-level=%q", s.roles, s.dataDir, s.addr, s.logLevel)
	}
}

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("no-such-setting = 1\n"), 0o600)
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"bad env value":       {nil, map[string]string{"HERALD_PING_INTERVAL": "soon"}},
		"unknown file key":    {[]string{"--config", bad}, nil},
		"missing config file": {[]string{"--config", filepath.Join(dir, "nope")}, nil},
		"stray argument":      {[]string{"extra"}, nil},
		"bad size":            {[]string{"--max-message-bytes", "lots"}, nil},
	} {
		fs, _ := serveFlags(io.Discard)
		if err := parseFlags(fs, tc.args, func(k string) string { return tc.env[k] }); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var b byteSize
	for in, want := range map[string]int{"65536": 65536, "64k": 65536, "64KiB": 65536, "1m": 1 << 20, "2MiB": 2 << 20} {
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("byteSize %q = %d, %v", in, b, err)
		}
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errOut, os.Getenv); code != 0 || !strings.HasPrefix(out.String(), "herald ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"bogus"}, &out, &errOut, os.Getenv); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"serve", "--help"}, &out, &errOut, os.Getenv); code != 0 || !strings.Contains(errOut.String(), "HERALD_JWT_SECRET") {
		t.Fatalf("serve --help: %d %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"token"}, &out, &errOut, os.Getenv); code != 2 {
		t.Fatalf("token without --user exit %d", code)
	}
	dir := t.TempDir()
	if code := run(context.Background(), []string{"token", "--user", "a", "--data-dir", dir}, &out, &errOut, os.Getenv); code != 1 {
		t.Fatalf("token before any secret exists: exit %d", code)
	}
	out.Reset()
	if code := run(context.Background(), []string{"token", "--user", "a", "--jwt-secret", "0123456789abcdef0123"}, &out, &errOut, os.Getenv); code != 0 || strings.Count(out.String(), ".") != 2 {
		t.Fatalf("token with secret: %d %q", code, out.String())
	}
}

func TestIssueFlagsExist(t *testing.T) {
	t.Parallel()
	fs, _ := serveFlags(io.Discard)
	seen := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { seen[f.Name] = true })
	for _, want := range []string{"addr", "data-dir", "jwt-secret", "api-key", "allowed-origins", "max-message-bytes"} {
		if !seen[want] {
			t.Errorf("flag --%s missing", want)
		}
	}
}

// process is a running herald binary.
type process struct {
	cmd    *exec.Cmd
	addr   string
	gossip string
	log    *syncBuffer
	done   chan error
}

// syncBuffer is a bytes.Buffer for one writer goroutine and other readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteString(v string) {
	s.mu.Lock()
	s.b.WriteString(v)
	s.mu.Unlock()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	addrRE   = regexp.MustCompile(`msg="herald node started".* addr=([0-9.:]+)`)
	gossipRE = regexp.MustCompile(`msg="herald node started".* gossip=([0-9.:]+)`)
)

func startBinary(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, log: &syncBuffer{}, done: make(chan error, 1)}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.log.WriteString(line + "\n")
			if m := addrRE.FindStringSubmatch(line); m != nil {
				if g := gossipRE.FindStringSubmatch(line); g != nil {
					p.gossip = g[1]
				}
				addrCh <- m[1]
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case p.addr = <-addrCh:
	case err := <-p.done:
		t.Fatalf("herald exited at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("herald did not start within 30 s")
	}
	return p
}

// TestBinaryQuickStart is the README's walkthrough with the real binary:
// start with no flags but an address and data dir, mint a token, connect,
// POST with the generated API key, receive; SIGTERM drains and exits 0;
// a restart replays what was stored.
func TestBinaryQuickStart(t *testing.T) {
	t.Parallel()
	testBinary(t, buildBinary(t))
}

// TestBinaryWithRedisAndMongo is the same walkthrough with
// --redis and --mongo: real redis-server and FerretDB servers.
func TestBinaryWithRedisAndMongo(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	r := redistest.Start(t)
	m := mongotest.Start(t)
	testBinary(t, bin, "--redis", r.URL(), "--mongo", m.URI(), "--mongo-database", "herald-cmd-test")
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herald")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func testBinary(t *testing.T, bin string, extra ...string) {
	data := t.TempDir()
	p := startBinary(t, bin, append([]string{"--addr", "127.0.0.1:0", "--data-dir", data}, extra...)...)
	if !strings.Contains(p.log.String(), "development mode") {
		t.Errorf("no development-mode notice in the log:\n%s", p.log)
	}
	tok, err := exec.Command(bin, "token", "--user", "alice", "--data-dir", data).Output()
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(data, "api-key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/ws?token="+strings.TrimSpace(string(tok)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read := func() map[string]any {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v\nlog:\n%s", err, p.log)
		}
		var f map[string]any
		json.Unmarshal(b, &f)
		return f
	}
	if f := read(); f["type"] != "ready" {
		t.Fatalf("first frame %v", f)
	}
	post := func(body string) string {
		req, _ := http.NewRequest("POST", "http://"+p.addr+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&r)
		if resp.StatusCode != 202 || r.ID == "" {
			t.Fatalf("post: %d", resp.StatusCode)
		}
		return r.ID
	}
	first := post(`{"to":["alice"],"data":{"text":"hello"}}`)
	if f := read(); f["type"] != "message" || f["id"] != first {
		t.Fatalf("got %v", f)
	}
	second := post(`{"to":["alice"],"data":{"text":"again"}}`)
	read()

	// SIGTERM: the client is told to reconnect, the process exits 0.
	p.cmd.Process.Signal(syscall.SIGTERM)
	if f := read(); f["type"] != "reconnect" {
		t.Fatalf("on SIGTERM got %v", f)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 4000 {
		t.Fatalf("close after SIGTERM: %v", err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log)
		}
		p.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("did not exit within 30 s of SIGTERM")
	}

	// Restart on the same data: the messages are still there.
	p2 := startBinary(t, bin, append([]string{"--addr", "127.0.0.1:0", "--data-dir", data, "--replay-window", "0s"}, extra...)...)
	c2, _, err := websocket.Dial(ctx, "ws://"+p2.addr+"/ws?since="+first+"&token="+strings.TrimSpace(string(tok)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.CloseNow()
	_, b, err := c2.Read(ctx)
	if err != nil || !strings.Contains(string(b), second) {
		t.Fatalf("replay after restart: %s %v", b, err)
	}
}

// TestSplitRolesAsProcesses runs each role as its own process of the built
// binary: they find each other by gossip, the push node has no token
// verifier and asks the auth node, the collect node hands messages to the
// dispatch node.
func TestSplitRolesAsProcesses(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	r := redistest.Start(t)
	m := mongotest.Start(t)
	secret, jwt, key := "cluster-secret-for-the-split-test", "jwt-secret-for-the-split-test-0123", "api-key-for-the-split-test"
	common := []string{"--addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0",
		"--cluster-secret", secret, "--mongo-database", "split"}
	start := func(join string, args ...string) *process {
		all := append(append([]string{"--data-dir", t.TempDir()}, common...), args...)
		if join != "" {
			all = append(all, "--join", join)
		}
		return startBinary(t, bin, all...)
	}
	authP := start("", "--node-id", "a1", "--roles", "auth", "--jwt-secret", jwt)
	join := authP.gossip
	collect := start(join, "--node-id", "c1", "--roles", "collect", "--api-key", key, "--mongo", m.URI())
	start(join, "--node-id", "d1", "--roles", "dispatch", "--redis", r.URL())
	push := start(join, "--node-id", "p1", "--roles", "push", "--redis", r.URL(), "--mongo", m.URI())

	// Every node sees the four.
	for _, p := range []*process{authP, collect, push} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + p.addr + "/v1/nodes")
			var v struct{ Nodes []struct{ ID string } }
			if err == nil {
				json.NewDecoder(resp.Body).Decode(&v)
				resp.Body.Close()
			}
			if len(v.Nodes) == 4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d nodes", p.addr, len(v.Nodes))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	tok, err := exec.Command(bin, "token", "--user", "alice", "--jwt-secret", jwt).Output()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+push.addr+"/ws?token="+strings.TrimSpace(string(tok)), nil)
	if err != nil {
		t.Fatalf("connect to the push node (token checked by the auth node): %v", err)
	}
	defer c.CloseNow()
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"ready"`) {
		t.Fatalf("ready: %s %v", b, err)
	}
	req, _ := http.NewRequest("POST", "http://"+collect.addr+"/v1/messages", strings.NewReader(`{"to":["alice"],"data":"split roles"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("post to the collect node: %d", resp.StatusCode)
	}
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"split roles"`) {
		t.Fatalf("message through collect -> dispatch -> push: %s %v", b, err)
	}
}
