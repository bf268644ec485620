package baselines_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	nbiolog "github.com/lesismal/nbio/logging"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/benchmarks/baselines"
	"github.com/heraldpush/herald/benchmarks/baselines/gobwasepoll"
	"github.com/heraldpush/herald/benchmarks/baselines/gorilla"
	"github.com/heraldpush/herald/benchmarks/baselines/gws"
	"github.com/heraldpush/herald/benchmarks/baselines/nbio"
)

var libs = []struct {
	name string
	new  func(baselines.Config) (baselines.Server, error)
}{
	{"gorilla", gorilla.New},
	{"gobwas", gobwasepoll.New},
	{"gws", gws.New},
	{"nbio", nbio.New},
}

func TestMain(m *testing.M) {
	nbiolog.Output = os.Stderr
	nbiolog.SetLevel(nbiolog.LevelError)
	os.Exit(m.Run())
}

const clients = 50

// TestContract runs the load tool's contract against every library, one
// after the other, so each can be checked for leaked goroutines on its own.
func TestContract(t *testing.T) {
	for _, lib := range libs {
		t.Run(lib.name, func(t *testing.T) {
			if raceEnabled && lib.name == "nbio" {
				testWithoutRace(t, "^TestContract$/^nbio$")
				return
			}
			ignore := goleak.IgnoreCurrent()
			testContract(t, lib.new)
			goleak.VerifyNone(t, ignore)
		})
	}
}

// testWithoutRace runs the tests matching pattern in a child go test built
// without the race detector. nbio hands each accepted connection from its
// accept goroutine to an epoll goroutine through the kernel, which the
// detector cannot see, so it reports races inside nbio and net (nbio marks
// its own functions //go:norace). Our code around nbio is the same either way.
func testWithoutRace(t *testing.T, pattern string) {
	t.Helper()
	goBin := "go" // the go command that runs these tests is on PATH
	cmd := exec.Command(goBin, "test", "-count=1", "-run", pattern, ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -run %s (without -race): %v\n%s", pattern, err, out)
	}
	t.Logf("without -race: %s", bytes.TrimSpace(out))
}

func testContract(t *testing.T, newServer func(baselines.Config) (baselines.Server, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	srv, err := newServer(baselines.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	shut := false
	defer func() {
		if !shut {
			_ = srv.Shutdown(ctx)
		}
	}()
	api := &apiClient{t: t, base: "http://" + srv.Addr(), hc: &http.Client{Transport: &http.Transport{}}}
	defer api.hc.CloseIdleConnections()

	// Connect, read the ready frame, ack.
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		user := fmt.Sprintf("user-%d", i)
		c := dial(ctx, t, api, user)
		conns[i] = c
		expectFrame(ctx, t, c, baselines.ReadyFrame(user))
		if got, want := string(baselines.ReadyFrame(user)), `{"type":"ready","user":"`+user+`"}`; got != want {
			t.Fatalf("ready frame = %s, want %s", got, want)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"ack","id":"01m8aq8msv000025ptet"}`)); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	api.waitConns(clients)

	// One broadcast reaches everyone, byte for byte.
	msg := []byte(`{"type":"message","id":"01m8aq8msv000025ptet","data":{"t":123},"ts":1795656274747}`)
	if n := api.broadcast(msg); n != clients {
		t.Fatalf("broadcast reached %d conns, want %d", n, clients)
	}
	readAll(ctx, t, conns, msg)

	// A payload past nbio's and gobwas' default frame sizes still arrives as
	// one frame.
	raw, br, _, err := ws.Dial(ctx, "ws://"+srv.Addr()+"/ws?token=t&user=raw")
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	rawr := io.Reader(raw)
	if br != nil { // holds whatever arrived with the 101 response
		rawr = br
	}
	expectRawFrame(t, rawr, baselines.ReadyFrame("raw"))
	api.waitConns(clients + 1)
	big := []byte(`{"type":"message","id":"01m8aq8msv000025pteu","data":"` + strings.Repeat("x", 100<<10) + `","ts":1}`)
	if n := api.broadcast(big); n != clients+1 {
		t.Fatalf("broadcast reached %d conns, want %d", n, clients+1)
	}
	expectRawFrame(t, rawr, big)
	readAll(ctx, t, conns, big)
	_ = raw.Close()
	api.waitConns(clients)

	// A message over the limit closes its connection, and only it. The
	// servers give up on the header, so the client may see a reset instead of
	// the 1009 close frame they send.
	tooBig := dial(ctx, t, api, "too-big")
	expectFrame(ctx, t, tooBig, baselines.ReadyFrame("too-big"))
	api.waitConns(clients + 1)
	_ = tooBig.Write(ctx, websocket.MessageText, make([]byte, baselines.MaxMessageBytes+1))
	if _, _, err := tooBig.Read(ctx); err == nil {
		t.Fatal("oversized message: connection still open")
	} else if st := websocket.CloseStatus(err); st != -1 && st != websocket.StatusMessageTooBig {
		t.Fatalf("oversized message: close %v, want %v", st, websocket.StatusMessageTooBig)
	}
	_ = tooBig.CloseNow()
	api.waitConns(clients)

	// Pings are answered.
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	readCtx := conns[0].CloseRead(pctx)
	if err := conns[0].Ping(readCtx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	pcancel()

	// Closing clients removes them.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { _ = c.Close(websocket.StatusNormalClosure, "") })
	}
	wg.Wait()
	api.waitConns(0)

	// Shutdown closes the remaining connections with 1001 going away.
	for i := range conns[:5] {
		conns[i] = dial(ctx, t, api, fmt.Sprintf("late-%d", i))
		expectFrame(ctx, t, conns[i], baselines.ReadyFrame(fmt.Sprintf("late-%d", i)))
	}
	api.waitConns(5)
	shut = true
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, c := range conns[:5] {
		_, _, err := c.Read(ctx)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Errorf("after shutdown: read err %v (status %v), want close %v", err, got, websocket.StatusGoingAway)
		}
		_ = c.CloseNow()
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

func dial(ctx context.Context, t *testing.T, api *apiClient, user string) *websocket.Conn {
	t.Helper()
	u := strings.Replace(api.base, "http://", "ws://", 1) + "/ws?token=anything&user=" + user
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: api.hc,
		HTTPHeader: http.Header{"Origin": {"https://elsewhere.example"}},
	})
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	c.SetReadLimit(2 << 20)
	return c
}

func expectFrame(ctx context.Context, t *testing.T, c *websocket.Conn, want []byte) {
	t.Helper()
	typ, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText || !bytes.Equal(got, want) {
		t.Fatalf("got %v %.80q, want text %.80q", typ, got, want)
	}
}

// readAll reads one message on every conn concurrently and checks it.
func readAll(ctx context.Context, t *testing.T, conns []*websocket.Conn, want []byte) {
	t.Helper()
	errs := make(chan error, len(conns))
	for i, c := range conns {
		go func() {
			typ, got, err := c.Read(ctx)
			switch {
			case err != nil:
				errs <- fmt.Errorf("client %d: %w", i, err)
			case typ != websocket.MessageText || !bytes.Equal(got, want):
				errs <- fmt.Errorf("client %d: got %v %.80q, want text %.80q", i, typ, got, want)
			default:
				errs <- nil
			}
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// expectRawFrame reads one frame and checks it is a single final text frame
// holding want.
func expectRawFrame(t *testing.T, r io.Reader, want []byte) {
	t.Helper()
	h, err := ws.ReadHeader(r)
	if err != nil {
		t.Fatalf("raw read header: %v", err)
	}
	if !h.Fin || h.OpCode != ws.OpText || h.Masked || h.Length != int64(len(want)) {
		t.Fatalf("raw header %+v, want one final unmasked text frame of %d bytes", h, len(want))
	}
	got := make([]byte, h.Length)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("raw read payload: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("raw payload %.80q, want %.80q", got, want)
	}
}

type apiClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func (a *apiClient) broadcast(body []byte) int {
	a.t.Helper()
	resp, err := a.hc.Post(a.base+"/broadcast", "application/json", bytes.NewReader(body))
	if err != nil {
		a.t.Fatalf("broadcast: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Conns  *int   `json:"conns"`
		TookNS *int64 `json:"took_ns"`
	}
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("broadcast: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Conns == nil || out.TookNS == nil || *out.TookNS <= 0 {
		a.t.Fatalf("broadcast answer %+v: %v", out, err)
	}
	return *out.Conns
}

type stats struct {
	Conns      *int    `json:"conns"`
	Goroutines *int    `json:"goroutines"`
	HeapInuse  *uint64 `json:"heap_inuse"`
	HeapAlloc  *uint64 `json:"heap_alloc"`
}

func (a *apiClient) stats() stats {
	a.t.Helper()
	resp, err := a.hc.Get(a.base + "/stats")
	if err != nil {
		a.t.Fatalf("stats: %v", err)
	}
	defer resp.Body.Close()
	var s stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		a.t.Fatalf("stats: %v", err)
	}
	if s.Conns == nil || s.Goroutines == nil || s.HeapInuse == nil || s.HeapAlloc == nil {
		a.t.Fatalf("stats: missing field in %+v", s)
	}
	return s
}

// waitConns polls /stats until it reports n connections.
func (a *apiClient) waitConns(n int) {
	a.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := *a.stats().Conns
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("stats conns = %d, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBroadcastRejectsBadBodies(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)
	srv, err := gorilla.New(baselines.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		body []byte
		want int
	}{
		{
			name: "empty",
			body: nil,
			want: http.StatusBadRequest,
		},
		{
			name: "too large",
			body: make([]byte, baselines.MaxBroadcastBytes+1),
			want: http.StatusRequestEntityTooLarge,
		},
	} {
		resp, err := hc.Post("http://"+srv.Addr()+"/broadcast", "application/json", bytes.NewReader(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (baselines.Config{}).Validate(); !errors.Is(err, baselines.ErrNoAddr) {
		t.Fatalf("empty config: %v, want ErrNoAddr", err)
	}
	for _, lib := range libs {
		if _, err := lib.new(baselines.Config{}); !errors.Is(err, baselines.ErrNoAddr) {
			t.Errorf("%s: New(empty config) = %v, want ErrNoAddr", lib.name, err)
		}
	}
}
