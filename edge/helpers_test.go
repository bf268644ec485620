package edge

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testAuth accepts tokens "u:<user>" and "u:<user>:<unix expiry>"; any
// other token is rejected, "down" as unavailable.
type testAuth struct{}

func (testAuth) Authenticate(_ context.Context, token string) (Identity, error) {
	if token == "down" {
		return Identity{}, fmt.Errorf("auth service: %w", ErrAuthUnavailable)
	}
	parts := strings.Split(token, ":")
	if len(parts) < 2 || parts[0] != "u" {
		return Identity{}, errors.New("token is not valid")
	}
	id := Identity{User: parts[1]}
	if len(parts) == 3 {
		var sec int64
		fmt.Sscan(parts[2], &sec)
		id.Expires = time.Unix(sec, 0)
	}
	return id, nil
}

// recorder is a Listener that records what it hears, and hands out the
// cursor a test sets ("" until then).
type recorder struct {
	mu      sync.Mutex
	online  []string
	offline []string
	acks    []string
	cursor  string
}

func (r *recorder) Online(u string)  { r.mu.Lock(); r.online = append(r.online, u); r.mu.Unlock() }
func (r *recorder) Offline(u string) { r.mu.Lock(); r.offline = append(r.offline, u); r.mu.Unlock() }
func (r *recorder) Ack(u, id string) {
	r.mu.Lock()
	r.acks = append(r.acks, u+"/"+id)
	r.mu.Unlock()
}

func (r *recorder) Settle(context.Context, string) string { return r.Cursor() }

func (r *recorder) Cursor() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cursor
}

func (r *recorder) setCursor(c string) {
	r.mu.Lock()
	r.cursor = c
	r.mu.Unlock()
}

func (r *recorder) snapshot() (online, offline, acks []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.online), slices.Clone(r.offline), slices.Clone(r.acks)
}

// fakeStore is a Replayer over a fixed list of messages; gate, if set,
// blocks each Replay call until it is closed.
type fakeStore struct {
	mu       sync.Mutex
	msgs     []*storage.Message
	gate     chan struct{}
	err      error
	onReplay func(storage.ReplayQuery) // called at each Replay, if set
}

func (f *fakeStore) Replay(ctx context.Context, q storage.ReplayQuery) ([]*storage.Message, bool, error) {
	if f.onReplay != nil {
		f.onReplay(q)
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, false, f.err
	}
	var out []*storage.Message
	size := 0
	for _, m := range f.msgs {
		if m.ID <= q.After || !m.Addressed(q.User) {
			continue
		}
		if len(out) == q.Limit || (q.MaxBytes > 0 && size >= q.MaxBytes) {
			return out, true, nil
		}
		out = append(out, m)
		size += len(m.Data)
	}
	return out, false, nil
}

type testEdge struct {
	srv  *Server
	http *http.Server
	addr string
	rec  *recorder
}

// wsURL is the edge's WebSocket URL with the given query.
func (e *testEdge) wsURL(query string) string {
	u := "ws://" + e.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// startEdge starts an edge with test timings on a free loopback port.
func startEdge(t testing.TB, portable bool, mutate func(*Config)) *testEdge {
	t.Helper()
	rec := &recorder{}
	cfg := DefaultConfig()
	cfg.NodeID = "test-node"
	cfg.Auth = testAuth{}
	cfg.Listener = rec
	cfg.Tick = 10 * time.Millisecond
	cfg.PingInterval = time.Second
	cfg.IdleTimeout = 10 * time.Second
	cfg.CloseTimeout = 500 * time.Millisecond
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.Workers = 4
	cfg.ReplayWindow = 0
	cfg.portable = portable
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := srv.HTTPServer(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-done
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("edge shutdown: %v", err)
		}
	})
	return &testEdge{srv: srv, http: hs, addr: ln.Addr().String(), rec: rec}
}

// bothPollers runs f with the epoll poller and with the portable one.
func bothPollers(t *testing.T, f func(t *testing.T, portable bool)) {
	t.Run("epoll", func(t *testing.T) { t.Parallel(); f(t, false) })
	t.Run("portable", func(t *testing.T) { t.Parallel(); f(t, true) })
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---- the independent client (github.com/coder/websocket)

type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

func dialWS(t *testing.T, e *testEdge, user string, query string) *wsClient {
	t.Helper()
	c, resp, err := websocket.Dial(ctxT(t, 5*time.Second), e.wsURL(query), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer u:" + user}},
	})
	if err != nil {
		t.Fatalf("dial as %s: %v (%v)", user, err, resp)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &wsClient{t: t, c: c}
}

// frame is a decoded server text frame.
type frame struct {
	Type     string          `json:"type"`
	ID       string          `json:"id"`
	Data     json.RawMessage `json:"data"`
	TS       int64           `json:"ts"`
	User     string          `json:"user"`
	Node     string          `json:"node"`
	Replayed int             `json:"replayed"`
	URL      string          `json:"url"`
	DelayMS  int64           `json:"delay_ms"`
	Cursor   string          `json:"cursor"`
}

func (w *wsClient) read() frame {
	w.t.Helper()
	f, err := w.tryRead(5 * time.Second)
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	return f
}

func (w *wsClient) tryRead(d time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, p, err := w.c.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	if typ != websocket.MessageText {
		return frame{}, fmt.Errorf("got a %v message", typ)
	}
	var f frame
	if err := json.Unmarshal(p, &f); err != nil {
		return frame{}, fmt.Errorf("bad frame %q: %w", p, err)
	}
	return f, nil
}

func (w *wsClient) expectType(typ string) frame {
	w.t.Helper()
	f := w.read()
	if f.Type != typ {
		w.t.Fatalf("got frame %+v, want type %q", f, typ)
	}
	return f
}

func (w *wsClient) send(v any) {
	w.t.Helper()
	p, _ := json.Marshal(v)
	if err := w.c.Write(ctxT(w.t, 5*time.Second), websocket.MessageText, p); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the connection closes and checks the code.
func (w *wsClient) expectClose(code CloseCode) {
	w.t.Helper()
	for {
		_, err := w.tryRead(10 * time.Second)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != websocket.StatusCode(code) {
			w.t.Fatalf("closed with %v (%v), want %d", got, err, code)
		}
		return
	}
}

// ---- a raw client that writes hand-built frames

type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// dialRaw performs the opening handshake by hand. extra is sent right after
// the request in the same write.
func dialRaw(t testing.TB, e *testEdge, user string, extra []byte) *rawClient {
	t.Helper()
	return dialRawWith(t, e, user, "", 0, extra)
}

// dialRawQuery is dialRaw with a query and, if rcvbuf > 0, a small socket
// receive buffer, for a client that reads slowly or not at all.
func dialRawQuery(t testing.TB, e *testEdge, user, query string, rcvbuf int) *rawClient {
	t.Helper()
	return dialRawWith(t, e, user, query, rcvbuf, nil)
}

func dialRawWith(t testing.TB, e *testEdge, user, query string, rcvbuf int, extra []byte) *rawClient {
	t.Helper()
	d := net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	var key [16]byte
	rand.Read(key[:])
	path := "/ws"
	if query != "" {
		path += "?" + query
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + e.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n" +
		"Authorization: Bearer u:" + user + "\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	return &rawClient{t: t, nc: nc, br: br}
}

// maskedFrame builds a client frame. rsv are the three reserved bits.
func maskedFrame(fin bool, rsv byte, op ws.OpCode, payload []byte) []byte {
	return rawFrame(fin, rsv, op, payload, true)
}

func rawFrame(fin bool, rsv byte, op ws.OpCode, payload []byte, masked bool) []byte {
	b0 := rsv<<4 | byte(op)
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	p := slices.Clone(payload)
	if masked {
		mask := [4]byte{0x12, 0x34, 0x56, 0x78}
		out = append(out, mask[:]...)
		ws.Cipher(p, mask, 0)
	}
	return append(out, p...)
}

func (r *rawClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

// readFrame reads one server frame.
func (r *rawClient) readFrame(d time.Duration) (ws.OpCode, []byte, error) {
	r.nc.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(r.br)
	if err != nil {
		return 0, nil, err
	}
	if h.Masked {
		return 0, nil, errors.New("server frame is masked")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return 0, nil, err
	}
	return h.OpCode, p, nil
}

// next reads frames until one that is not a ping (pings are answered).
func (r *rawClient) next() (ws.OpCode, []byte) {
	r.t.Helper()
	for {
		op, p, err := r.readFrame(5 * time.Second)
		if err != nil {
			r.t.Fatalf("raw read: %v", err)
		}
		if op == ws.OpPing {
			continue
		}
		return op, p
	}
}

// expectClose reads until a close frame, checks its code, then expects the
// server to drop the TCP connection.
func (r *rawClient) expectClose(code CloseCode) {
	r.t.Helper()
	for {
		op, p := r.next()
		if op != ws.OpClose {
			continue
		}
		if len(p) < 2 {
			r.t.Fatalf("close frame without code, want %d", code)
		}
		if got := CloseCode(binary.BigEndian.Uint16(p)); got != code {
			r.t.Fatalf("close code %d (%q), want %d", got, p[2:], code)
		}
		r.expectEOF()
		return
	}
}

// expectEOF expects the server to close the TCP connection.
func (r *rawClient) expectEOF() {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, err := r.br.ReadByte()
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
			return
		}
		r.t.Fatalf("waiting for the server to close: %v", err)
	}
}

func (r *rawClient) expectText() frame {
	r.t.Helper()
	op, p := r.next()
	if op != ws.OpText {
		r.t.Fatalf("got opcode %v (%q), want text", op, p)
	}
	var f frame
	if err := json.Unmarshal(p, &f); err != nil {
		r.t.Fatalf("bad frame %q: %v", p, err)
	}
	return f
}

// httpGet performs a request to the edge and returns status and body.
func httpDo(t *testing.T, e *testEdge, query string, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/ws?"+query, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func upgradeHeader(token string) http.Header {
	h := http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return h
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; !cond(); wait = min(wait*2, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(wait)
	}
}

func msg(id string, data string) *storage.Message {
	t, _ := storage.ParseID(id)
	return &storage.Message{ID: id, Data: json.RawMessage(data), CreatedAt: t}
}

var _ = url.Parse
