package wsclient

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a Pool.
type Config struct {
	// SourceIPs are local addresses connections bind to, round robin
	// (e.g. 127.0.0.2, 127.0.0.3): each has its own ephemeral ports.
	SourceIPs []string
	// Ack sends {"type":"ack","id":...} for every message, as real
	// clients do.
	Ack bool
	// Loops is the number of epoll loops (goroutines reading sockets).
	Loops int
	// HandshakeTimeout bounds one connect plus upgrade.
	HandshakeTimeout time.Duration
}

// Pool holds client connections.
type Pool struct {
	cfg   Config
	loops []*loop
	next  atomic.Uint64

	mu      sync.Mutex
	clients []*Client

	// Latencies of message receipts, nanoseconds.
	latMu sync.Mutex
	lats  []int64

	// Counters.
	Messages  atomic.Int64 // message frames received
	Unique    atomic.Int64 // messages received for the first time by their client
	Readies   atomic.Int64 // ready frames received
	Resyncs   atomic.Int64 // resync frames answered
	Closes    atomic.Int64 // connections the server closed
	AcksLost  atomic.Int64 // acks not written (socket full)
	ConnectOK atomic.Int64
	ConnectKO atomic.Int64
}

// Client is one connection (and its reconnections) for one user.
type Client struct {
	User string
	pool *Pool

	bufMu sync.Mutex // guards buf: held while parsing, never with mu
	buf   []byte     // partial frame

	mu        sync.Mutex
	nc        net.Conn
	fd        int
	open      bool
	got       map[string]uint16 // message ID -> receipts
	cursor    string            // resume position: the last cursor the server sent
	seen      []string          // IDs received above cursor (the newest maxSeen)
	hint      string            // reconnect URL from a "reconnect" frame
	node      string            // node of the ready frame
	ready     chan struct{}     // closed at the first ready frame of a connection
	readyOnce bool
	closeCode uint16
	connects  int
}

// New starts a pool's epoll loops.
func New(cfg Config) (*Pool, error) {
	if cfg.Loops < 1 {
		cfg.Loops = 1
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	p := &Pool{cfg: cfg}
	for range cfg.Loops {
		l, err := newLoop(p)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.loops = append(p.loops, l)
		go l.run()
	}
	return p, nil
}

// Close closes every connection and stops the loops.
func (p *Pool) Close() {
	p.mu.Lock()
	clients := p.clients
	p.mu.Unlock()
	for _, c := range clients {
		c.Disconnect()
	}
	for _, l := range p.loops {
		l.stop()
	}
}

// NewClient makes a client for user; it connects with Connect.
func (p *Pool) NewClient(user string) *Client {
	c := &Client{User: user, pool: p, got: make(map[string]uint16, 4)}
	p.mu.Lock()
	p.clients = append(p.clients, c)
	p.mu.Unlock()
	return c
}

// Clients returns every client made.
func (p *Pool) Clients() []*Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Client(nil), p.clients...)
}

// Latencies returns and clears the recorded latencies.
func (p *Pool) Latencies() []int64 {
	p.latMu.Lock()
	defer p.latMu.Unlock()
	out := p.lats
	p.lats = nil
	return out
}

func (p *Pool) recordLatency(d int64) {
	p.latMu.Lock()
	p.lats = append(p.lats, d)
	p.latMu.Unlock()
}

// Connect dials base (ws://host:port/ws, or the client's reconnect hint
// if it has one), authenticates with token and resumes from the client's
// cursor, then waits for the ready frame.
func (c *Client) Connect(ctx context.Context, base, token string, resume bool) error {
	c.mu.Lock()
	if c.open {
		c.mu.Unlock()
		return errors.New("already connected")
	}
	if c.hint != "" {
		base, c.hint = c.hint, ""
	}
	since, seen := "", ""
	if resume {
		since, seen = c.cursor, strings.Join(c.seen, ",")
	}
	ready := make(chan struct{})
	c.ready, c.readyOnce = ready, false
	c.mu.Unlock()

	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("token", token)
	q.Set("user", c.User)
	if since != "" {
		q.Set("since", since)
		q.Set("seen", seen)
	}
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, c.pool.cfg.HandshakeTimeout)
	defer cancel()
	nc, early, err := c.pool.dial(ctx, u)
	if err != nil {
		c.pool.ConnectKO.Add(1)
		return err
	}
	fd, err := socketFD(nc)
	if err != nil {
		nc.Close()
		return err
	}
	c.bufMu.Lock()
	c.buf = nil
	c.bufMu.Unlock()
	c.mu.Lock()
	c.nc, c.fd, c.open, c.closeCode = nc, fd, true, 0
	c.connects++
	c.mu.Unlock()
	l := c.pool.loops[c.pool.next.Add(1)%uint64(len(c.pool.loops))]
	if len(early) > 0 {
		c.feed(early)
	}
	if err := l.add(c); err != nil {
		c.Disconnect()
		return err
	}
	select {
	case <-ready:
		c.pool.ConnectOK.Add(1)
		return nil
	case <-ctx.Done():
		c.Disconnect()
		c.pool.ConnectKO.Add(1)
		return fmt.Errorf("no ready frame: %w", ctx.Err())
	}
}

// Disconnect closes the connection without a close frame (as a dropped
// network would), keeping what the client received.
func (c *Client) Disconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.open {
		return
	}
	c.open = false
	for _, l := range c.pool.loops {
		l.remove(c.fd)
	}
	_ = c.nc.Close()
}

// Open reports whether the client is connected.
func (c *Client) Open() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// Received returns how many times each message ID arrived.
func (c *Client) Received() map[string]uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint16, len(c.got))
	for k, v := range c.got {
		out[k] = v
	}
	return out
}

// Node returns the node named by the last ready frame.
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

// dial connects and performs the opening handshake; it returns the bytes
// that arrived after the response header.
func (p *Pool) dial(ctx context.Context, u *url.URL) (net.Conn, []byte, error) {
	d := net.Dialer{}
	if n := len(p.cfg.SourceIPs); n > 0 {
		ip := p.cfg.SourceIPs[int(p.next.Add(1))%n]
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
		// Choose the source port at connect(), not bind(): ports are then
		// unique per destination and ports in TIME_WAIT can be reused, so
		// one source address serves tens of thousands of connections.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	req := "GET " + path + "?" + u.RawQuery + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		nc.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, nil, fmt.Errorf("handshake: %s", resp.Status)
	}
	var early []byte
	if n := br.Buffered(); n > 0 {
		early, _ = br.Peek(n)
		early = append([]byte(nil), early...)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, early, nil
}

func socketFD(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, errors.New("no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	err = rc.Control(func(f uintptr) { fd = int(f) })
	return fd, err
}

// ---- reading

// onReadable reads what the socket has; called from the client's loop.
func (c *Client) onReadable(buf []byte) {
	for {
		c.mu.Lock()
		if !c.open {
			c.mu.Unlock()
			return
		}
		n, err := unix.Read(c.fd, buf)
		c.mu.Unlock()
		switch {
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case err != nil || n <= 0:
			c.pool.Closes.Add(1)
			c.Disconnect()
			return
		}
		c.feed(buf[:n])
		if n < len(buf) {
			return
		}
	}
}

// feed parses server frames from newly read bytes.
func (c *Client) feed(p []byte) {
	c.bufMu.Lock()
	defer c.bufMu.Unlock()
	data := p
	if len(c.buf) > 0 {
		c.buf = append(c.buf, p...)
		data = c.buf
	}
	off := 0
	for {
		op, payload, n := nextFrame(data[off:])
		if n == 0 {
			break
		}
		off += n
		c.onFrame(op, payload)
	}
	rest := data[off:]
	if len(rest) == 0 {
		c.buf = nil
	} else {
		c.buf = append([]byte(nil), rest...)
	}
}

// nextFrame parses one unmasked server frame; n is 0 if incomplete.
func nextFrame(b []byte) (op byte, payload []byte, n int) {
	if len(b) < 2 {
		return 0, nil, 0
	}
	op = b[0] & 0x0f
	l := int(b[1] & 0x7f)
	h := 2
	switch l {
	case 126:
		if len(b) < 4 {
			return 0, nil, 0
		}
		l, h = int(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return 0, nil, 0
		}
		l, h = int(binary.BigEndian.Uint64(b[2:10])), 10
	}
	if len(b) < h+l {
		return 0, nil, 0
	}
	return op, b[h : h+l], h + l
}

func (c *Client) onFrame(op byte, p []byte) {
	switch op {
	case 0x9: // ping
		c.write(0xA, p)
	case 0x8: // close
		c.mu.Lock()
		if len(p) >= 2 {
			c.closeCode = binary.BigEndian.Uint16(p)
		}
		c.mu.Unlock()
	case 0x1:
		c.onText(p)
	}
}

// onText handles a JSON text frame without a full decode: the load tool
// only needs type, id, cursor, url, node and data.t.
func (c *Client) onText(p []byte) {
	typ := jsonString(p, `"type":`)
	switch typ {
	case "message":
		now := time.Now().UnixNano()
		id := jsonString(p, `"id":`)
		c.pool.Messages.Add(1)
		c.mu.Lock()
		c.got[id]++
		first := c.got[id] == 1
		c.advanceLocked(messageCursor(p))
		if first && id > c.cursor {
			c.seen = append(c.seen, id)
			if len(c.seen) > maxSeen {
				c.seen = c.seen[1:]
			}
		}
		c.mu.Unlock()
		// A repeat (a replay overlapping what arrived live) is counted, but
		// its age is not a delivery latency.
		if first {
			c.pool.Unique.Add(1)
			if t := jsonInt(p, `"t":`); t > 0 {
				c.pool.recordLatency(now - t)
			}
		}
		if c.pool.cfg.Ack {
			c.write(0x1, []byte(`{"type":"ack","id":"`+id+`"}`))
		}
	case "ready":
		c.pool.Readies.Add(1)
		c.mu.Lock()
		c.advanceLocked(jsonString(p, `"cursor":`))
		c.node = jsonString(p, `"node":`)
		if !c.readyOnce && c.ready != nil {
			c.readyOnce = true
			close(c.ready)
		}
		c.mu.Unlock()
	case "reconnect":
		c.mu.Lock()
		c.hint = jsonString(p, `"url":`)
		c.mu.Unlock()
	case "resync":
		c.mu.Lock()
		msg := `{"type":"resume","since":"` + c.cursor + `","seen":[`
		for i, id := range c.seen {
			if i > 0 {
				msg += ","
			}
			msg += `"` + id + `"`
		}
		msg += `]}`
		c.mu.Unlock()
		c.pool.Resyncs.Add(1)
		c.write(0x1, []byte(msg))
	}
}

// maxSeen is the most IDs above the cursor a client keeps to resume with.
const maxSeen = 100

// advanceLocked moves the resume position to cursor if it is later.
func (c *Client) advanceLocked(cursor string) {
	if cursor <= c.cursor {
		return
	}
	c.cursor = cursor
	kept := c.seen[:0]
	for _, id := range c.seen {
		if id > cursor {
			kept = append(kept, id)
		}
	}
	c.seen = kept
}

// messageCursor returns the cursor a message frame ends with, or "": the
// server writes it last, so message data cannot be mistaken for it.
func messageCursor(p []byte) string {
	const pre = `,"cursor":"`
	n := len(pre) + 20 + 2
	if len(p) < n || string(p[len(p)-n:len(p)-n+len(pre)]) != pre || string(p[len(p)-2:]) != `"}` {
		return ""
	}
	return string(p[len(p)-22 : len(p)-2])
}

// write sends a small masked client frame, dropping it if the socket is
// full (the load tool must never block on its own clients).
func (c *Client) write(op byte, payload []byte) {
	frame := make([]byte, 0, 8+len(payload))
	if len(payload) < 126 {
		frame = append(frame, 0x80|op, 0x80|byte(len(payload)))
	} else {
		frame = append(frame, 0x80|op, 0x80|126, byte(len(payload)>>8), byte(len(payload)))
	}
	var mask [4]byte
	frame = append(frame, mask[:]...) // a zero mask leaves the payload as is
	frame = append(frame, payload...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.open {
		return
	}
	if n, err := unix.Write(c.fd, frame); err != nil || n != len(frame) {
		c.pool.AcksLost.Add(1)
	}
}

// jsonString finds key in a flat JSON object and returns its string value.
func jsonString(p []byte, key string) string {
	i := indexOf(p, key)
	if i < 0 {
		return ""
	}
	j := i + len(key)
	for j < len(p) && p[j] == ' ' {
		j++
	}
	if j >= len(p) || p[j] != '"' {
		return ""
	}
	j++
	k := j
	for k < len(p) && p[k] != '"' {
		k++
	}
	return string(p[j:k])
}

// jsonInt finds key and returns its integer value, or 0.
func jsonInt(p []byte, key string) int64 {
	i := indexOf(p, key)
	if i < 0 {
		return 0
	}
	j := i + len(key)
	k := j
	for k < len(p) && (p[k] >= '0' && p[k] <= '9') {
		k++
	}
	v, _ := strconv.ParseInt(string(p[j:k]), 10, 64)
	return v
}

func indexOf(p []byte, s string) int {
	for i := 0; i+len(s) <= len(p); i++ {
		if string(p[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}
