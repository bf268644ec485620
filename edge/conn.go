package edge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // our close frame is queued or sent
	stateClosed            // the socket is closed
)

// Conn is one client connection. An idle Conn holds no goroutine and no
// buffer: only this struct, the socket, and its places in the registry and
// the timing wheel.
//
// All system calls on fd happen with mu held and after checking that the
// Conn is not closed, and the socket is closed with mu held, so a reused
// file descriptor is never touched.
type Conn struct {
	srv     *Server
	nc      net.Conn // nil when the edge owns the bare descriptor (epoll)
	fd      int
	gen     uint32 // distinguishes this Conn from a later one on the same fd
	user    string
	expires uint32 // token expiry in Unix seconds; 0 = never

	lastRead atomic.Uint32 // server clock when the last bytes arrived

	// The timing wheel's intrusive list; guarded by the slot's mutex.
	slot       int32
	prev, next *Conn

	// rs is touched only by the goroutine that owns the read side: the
	// handshake goroutine before the Conn is polled, then the worker the
	// poller handed it to (never two at once; see busy).
	rs *readState

	mu         sync.Mutex
	state      connState
	busy       bool   // a worker owns the read side
	pendingEv  uint32 // events that arrived while busy
	armed      bool   // registered with the poller and waiting for one event
	wantOut    bool   // a write would block: waiting for writability
	closeSent  bool   // the close frame is queued; nothing more is
	lingerDone bool   // after our close frame, do not wait for the peer's
	peerClosed bool   // the client's close frame arrived
	registered bool   // counted by Server.register
	live       bool   // the handshake is done: ready sent or replay started
	wq         [][]byte
	woff       int // bytes of wq[0] already written
	wbytes     int // bytes in wq not yet written
	hold       *holdState
	recent     *recentSet
	job        *replayJob // a replay or resync in progress (replay.go)
}

// recentSet remembers, for a while after a replay, the recently created
// messages it sent: they may still be on their way through dispatch, and
// their live copies must not reach the client a second time.
type recentSet struct {
	ids   *idSet
	until uint32 // server clock
}

// maxRecent bounds the replayed IDs a connection remembers (idSet), so
// that a replay costs bounded memory whatever its backlog. Forgetting one
// can only mean a live copy delivered twice, which clients drop by ID;
// remembering too little never loses a message.
const maxRecent = 1024

// idSet is a set of message IDs that keeps the last max added. Replays add
// in ID order, so it keeps the newest: those a live copy may still follow.
type idSet struct {
	ids   map[string]struct{}
	order []string
	max   int
}

func newIDSet(max int) *idSet { return &idSet{ids: make(map[string]struct{}), max: max} }

func (s *idSet) add(id string) {
	if _, ok := s.ids[id]; ok {
		return
	}
	id = strings.Clone(id) // not pinning the buffer it came from
	s.ids[id] = struct{}{}
	s.order = append(s.order, id)
	if len(s.order) > s.max {
		delete(s.ids, s.order[0])
		s.order[0] = ""
		s.order = s.order[1:]
	}
}

func (s *idSet) has(id string) bool {
	_, ok := s.ids[id]
	return ok
}

func (s *idSet) len() int { return len(s.ids) }

// readState is the partial input of a connection.
type readState struct {
	buf    []byte    // an incomplete frame, header included
	frag   []byte    // payload of an incomplete fragmented message
	fragOp ws.OpCode // opcode of that message; 0 when none
}

// holdState exists while a connection replays: live frames wait in frames
// until the replay is written, and those the replay already sent are
// dropped.
type holdState struct {
	frames []*Frame
	bytes  int
	// replayed holds the IDs the replay sent that were created after its
	// cutoff (ReplayDedupe before it began), the newest maxRecent: a held
	// live copy of one of them is dropped. An older message's live copy
	// is sent (a repeat at worst): recording the whole backlog would make
	// a replay's memory grow with it.
	replayed *idSet
}

// closeError is a reason to close a connection.
type closeError struct {
	code   CloseCode
	reason string
}

func protocolError(format string, args ...any) *closeError {
	return &closeError{CloseProtocol, fmt.Sprintf(format, args...)}
}

// User is the connection's user ID.
func (c *Conn) User() string { return c.user }

// RemoteAddr is the client's address (nil once closed).
func (c *Conn) RemoteAddr() net.Addr {
	if c.nc != nil {
		return c.nc.RemoteAddr()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil
	}
	return sysPeerAddr(c.fd)
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateClosed
}

// ---- reading

// onReadable reads what the socket has and handles every complete frame.
// It runs on the goroutine that owns the read side; buf is that goroutine's
// scratch buffer. It reads until the socket is drained (the epoll poller
// is edge-triggered: no event comes for data already there) or a budget
// is spent, and then reports more=true so the caller comes back.
func (c *Conn) onReadable(buf []byte) (more bool) {
	for i := 0; ; i++ {
		if i == 16 {
			return true // let the worker's other connections have a turn
		}
		dst, own := buf, false
		if rs := c.rs; rs != nil && len(rs.buf) > 0 {
			if cap(rs.buf)-len(rs.buf) >= 512 {
				dst, own = rs.buf[len(rs.buf):cap(rs.buf)], true // read straight into the partial frame
			}
		}
		c.mu.Lock()
		if c.state == stateClosed {
			c.mu.Unlock()
			return false
		}
		n, err := sysRead(c.fd, dst)
		c.mu.Unlock()
		switch {
		case err == syscall.EAGAIN:
			return false
		case err == syscall.EINTR:
			continue
		case err != nil:
			c.teardown(err)
			return false
		case n == 0:
			c.teardown(io.EOF)
			return false
		}
		c.lastRead.Store(c.srv.now())
		c.srv.metrics.bytesIn.Add(float64(n))
		if !c.feed(dst[:n], own) {
			return false
		}
		if n < len(dst) {
			return false // drained; new data brings a new event
		}
	}
}

// feed handles newly read bytes: p is in the spare capacity of c.rs.buf when
// own is set, else in a scratch buffer. It reports whether to read on.
func (c *Conn) feed(p []byte, own bool) bool {
	data := p
	rs := c.rs
	if rs != nil && len(rs.buf) > 0 {
		if own {
			rs.buf = rs.buf[:len(rs.buf)+len(p)]
		} else {
			rs.buf = append(rs.buf, p...)
		}
		data, own = rs.buf, true
	}
	consumed, need, cerr := c.parse(data)
	if cerr != nil {
		c.fail(cerr)
		return false
	}
	c.keepRest(data[consumed:], need, own)
	return !c.isClosed()
}

// keepRest keeps the bytes of an incomplete frame for the next read, in a
// buffer sized for the whole frame once its header is known (the header was
// checked against MaxMessageBytes first). rest lies in c.rs.buf when own is
// set, else in a scratch buffer.
func (c *Conn) keepRest(rest []byte, need int, own bool) {
	if len(rest) == 0 {
		if c.rs != nil {
			c.rs.buf = nil
			if c.rs.fragOp == 0 {
				c.rs = nil // nothing partial: the connection holds no buffer
			}
		}
		return
	}
	size := max(need, len(rest), maxHeaderLen)
	if own && cap(c.rs.buf) >= size {
		c.rs.buf = c.rs.buf[:copy(c.rs.buf, rest)] // copy handles the overlap
		return
	}
	b := make([]byte, len(rest), size)
	copy(b, rest)
	if c.rs == nil {
		c.rs = &readState{}
	}
	c.rs.buf = b
}

// parse handles the complete frames at the start of data and returns how
// many bytes it consumed and, if the next frame's header is complete, that
// frame's total length.
func (c *Conn) parse(data []byte) (consumed, need int, cerr *closeError) {
	max := int64(c.srv.cfg.MaxMessageBytes)
	for consumed < len(data) {
		h, hn, err := parseHeader(data[consumed:])
		if err != nil {
			return consumed, 0, protocolError("%v", err)
		}
		if hn == 0 {
			return consumed, 0, nil
		}
		switch {
		case h.rsv != 0:
			return consumed, 0, protocolError("reserved bits set without an extension")
		case !knownOpCode(h.op):
			return consumed, 0, protocolError("unknown opcode %d", h.op)
		case !h.masked:
			return consumed, 0, protocolError("client frames must be masked")
		case h.op.IsControl() && (!h.fin || h.length > 125):
			return consumed, 0, protocolError("control frame fragmented or over 125 bytes")
		case !h.op.IsControl() && h.length+int64(c.fragLen()) > max:
			return consumed, 0, &closeError{CloseTooBig, fmt.Sprintf("message over %d bytes", max)}
		}
		total := hn + int(h.length)
		if len(data)-consumed < total {
			return consumed, total, nil
		}
		payload := data[consumed+hn : consumed+total]
		ws.Cipher(payload, h.mask, 0)
		consumed += total
		if cerr := c.handleFrame(h, payload); cerr != nil {
			return consumed, 0, cerr
		}
		if c.isClosed() {
			return consumed, 0, nil
		}
	}
	return consumed, 0, nil
}

func (c *Conn) fragLen() int {
	if c.rs == nil {
		return 0
	}
	return len(c.rs.frag)
}

// handleFrame handles one complete, unmasked frame. payload is only valid
// during the call.
func (c *Conn) handleFrame(h header, payload []byte) *closeError {
	c.srv.metrics.framesIn.Inc()
	fragmenting := c.rs != nil && c.rs.fragOp != 0
	switch h.op {
	case ws.OpPing:
		c.sendControl(ws.OpPong, payload)
		return nil
	case ws.OpPong:
		return nil
	case ws.OpClose:
		return c.onClose(payload)
	case ws.OpContinuation:
		if !fragmenting {
			return protocolError("continuation frame without a message to continue")
		}
		c.rs.frag = append(c.rs.frag, payload...)
		if !h.fin {
			return nil
		}
		op, msg := c.rs.fragOp, c.rs.frag
		c.rs.fragOp, c.rs.frag = 0, nil
		return c.onMessage(op, msg)
	default: // text or binary
		if fragmenting {
			return protocolError("new message inside a fragmented message")
		}
		if !h.fin {
			if c.rs == nil {
				c.rs = &readState{}
			}
			c.rs.fragOp = h.op
			c.rs.frag = append(make([]byte, 0, len(payload)*2), payload...)
			return nil
		}
		return c.onMessage(h.op, payload)
	}
}

// onMessage handles a complete client message.
func (c *Conn) onMessage(op ws.OpCode, p []byte) *closeError {
	if op == ws.OpBinary {
		return &closeError{CloseUnsupported, "binary messages are not supported; send JSON text"}
	}
	if !utf8.Valid(p) {
		return &closeError{CloseBadUTF8, "text message is not valid UTF-8"}
	}
	m, err := decodeClientMessage(p)
	if err != nil {
		return &closeError{CloseBadMessage, err.Error()}
	}
	switch m.Type {
	case clientAck:
		c.srv.metrics.acks.Inc()
		if l := c.srv.cfg.Listener; l != nil {
			l.Ack(c.user, m.ID)
		}
	case clientPing:
		c.send(pongFrame.b)
	case clientResume:
		return c.onResume(m)
	}
	return nil
}

// onClose handles the client's close frame: echo it, then close.
func (c *Conn) onClose(p []byte) *closeError {
	if len(p) == 1 {
		return protocolError("close frame with a 1-byte payload")
	}
	var echo []byte
	if len(p) >= 2 {
		code := binary.BigEndian.Uint16(p)
		if !validCloseCode(code) {
			return protocolError("invalid close code %d", code)
		}
		if !utf8.Valid(p[2:]) {
			return &closeError{CloseBadUTF8, "close reason is not valid UTF-8"}
		}
		echo = closePayload(CloseCode(code), "")
	}
	c.mu.Lock()
	c.peerClosed = true
	if c.state == stateOpen {
		c.queueCloseLocked(echo, true)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	// We had sent our close frame first: the handshake is complete.
	c.srv.reap(c)
	return nil
}

// ---- writing

// send queues b (an encoded frame) and writes what the socket takes.
func (c *Conn) send(b []byte) {
	c.mu.Lock()
	if c.state == stateOpen {
		c.queueLocked(b)
	}
	c.mu.Unlock()
}

// sendControl sends a control frame with a copy of payload.
func (c *Conn) sendControl(op ws.OpCode, payload []byte) {
	c.send(appendFrame(make([]byte, 0, 2+len(payload)), op, payload))
}

// deliver queues a live message frame, or holds it while a replay runs.
func (c *Conn) deliver(f *Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	if r := c.recent; r != nil {
		if int32(c.srv.now()-r.until) >= 0 {
			c.recent = nil
		} else if r.ids.has(f.ID) {
			return true // replayed already
		}
	}
	if h := c.hold; h != nil {
		if h.bytes+f.Len() > c.srv.cfg.WriteQueueBytes {
			c.slowLocked()
			return false
		}
		h.frames = append(h.frames, f)
		h.bytes += f.Len()
		return true
	}
	return c.queueLocked(f.b)
}

func (c *Conn) queueLocked(b []byte) bool {
	if c.wbytes+len(b) > c.srv.cfg.WriteQueueBytes {
		c.slowLocked()
		return false
	}
	return c.pushLocked(b)
}

// pushLocked writes b, or queues what the socket does not take, with no
// bound on the queue (queueLocked checks it). It reports false if the
// socket failed.
func (c *Conn) pushLocked(b []byte) bool {
	if len(c.wq) == 0 && !c.wantOut && c.state != stateClosed {
		// The common case: nothing queued, so write at once and queue only
		// what the socket did not take.
		n, err := sysWrite(c.fd, b)
		if err == nil && n == len(b) {
			c.srv.metrics.bytesOut.Add(float64(n))
			return true
		}
		if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
			c.state = stateClosing
			c.srv.reap(c)
			return false
		}
		n = max(n, 0)
		c.srv.metrics.bytesOut.Add(float64(n))
		c.wq = append(c.wq, b)
		c.woff = n
		c.wbytes += len(b) - n
		c.flushLocked()
		return true
	}
	c.wq = append(c.wq, b)
	c.wbytes += len(b)
	if !c.wantOut {
		c.flushLocked()
	}
	return true
}

// slowLocked closes a client that fell too far behind. Queued messages are
// dropped (they are in the store for replay); a frame partly written is
// finished first so the close frame arrives intact.
func (c *Conn) slowLocked() {
	c.srv.metrics.slowConsumers.Inc()
	if c.woff > 0 {
		c.wq = c.wq[:1]
		c.wbytes = len(c.wq[0]) - c.woff
	} else {
		c.wq, c.wbytes = nil, 0
	}
	if c.hold != nil {
		c.hold.frames, c.hold.bytes = nil, 0
	}
	c.queueCloseLocked(closePayload(CloseSlowConsumer, "slow consumer"), false)
}

// flushLocked writes queued frames until the queue is empty or the socket
// would block.
func (c *Conn) flushLocked() {
	for len(c.wq) > 0 && c.state != stateClosed {
		var n int
		var err error
		if len(c.wq) == 1 {
			n, err = sysWrite(c.fd, c.wq[0][c.woff:])
		} else {
			n, err = sysWritev(c.fd, c.wq, c.woff)
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			c.wantOutLocked()
			return
		case err != nil:
			c.state = stateClosing // stop queueing; the reaper closes the socket
			c.srv.reap(c)
			return
		}
		c.srv.metrics.bytesOut.Add(float64(n))
		c.consumeLocked(n)
	}
	c.wantOut = false
	if c.job != nil {
		c.replayDrainedLocked()
	}
	if c.closeSent && len(c.wq) == 0 && c.state == stateClosing {
		c.closeFlushedLocked()
	}
}

func (c *Conn) consumeLocked(n int) {
	c.wbytes -= n
	for n > 0 {
		rem := len(c.wq[0]) - c.woff
		if n < rem {
			c.woff += n
			return
		}
		n -= rem
		c.wq[0] = nil
		c.wq = c.wq[1:]
		c.woff = 0
	}
	if len(c.wq) == 0 {
		c.wq = nil // an idle connection keeps no queue
	}
}

func (c *Conn) wantOutLocked() {
	if c.wantOut {
		return
	}
	c.wantOut = true
	if c.armed {
		if err := c.srv.poller.rearm(c, true); err != nil {
			c.state = stateClosing
			c.srv.reap(c)
		}
	}
	// Otherwise the worker that owns the read side re-arms with
	// writability on its way out, or the handshake registers the Conn.
}

// ---- closing

// Close starts the closing handshake with code and reason. It returns at
// once; the socket closes when the client answers or CloseTimeout passes.
func (c *Conn) Close(code CloseCode, reason string) {
	c.mu.Lock()
	if c.state == stateOpen {
		c.queueCloseLocked(closePayload(code, reason), false)
	}
	c.mu.Unlock()
}

// fail closes the connection for a client error without waiting for the
// client's close frame.
func (c *Conn) fail(e *closeError) {
	c.srv.metrics.closes.WithLabelValues(e.code.String()).Inc()
	c.srv.log.Debug("closing connection", "user", c.user, "code", uint16(e.code), "reason", e.reason)
	c.mu.Lock()
	if c.state == stateOpen {
		c.queueCloseLocked(closePayload(e.code, e.reason), true)
	}
	c.mu.Unlock()
}

// queueCloseLocked queues the close frame after whatever is queued, and
// stops accepting more. noLinger skips waiting for the peer's close frame.
func (c *Conn) queueCloseLocked(payload []byte, noLinger bool) {
	c.state = stateClosing
	c.lingerDone = noLinger
	c.closeSent = true
	c.wq = append(c.wq, appendFrame(make([]byte, 0, 2+len(payload)), ws.OpClose, payload))
	c.wbytes += 2 + len(payload)
	c.srv.closing.add(c, c.srv.now()+uint32(c.srv.cfg.CloseTimeout/time.Millisecond))
	if !c.wantOut {
		c.flushLocked()
	}
}

// closeFlushedLocked runs when our close frame has been written.
func (c *Conn) closeFlushedLocked() {
	if c.peerClosed || c.lingerDone {
		c.srv.reap(c)
		return
	}
	// Half-close: the client sees EOF after our close frame and answers;
	// its close frame or EOF (or CloseTimeout) ends the connection.
	_ = sysShutdownWrite(c.fd)
}

// teardown closes the socket and forgets the connection. Safe to call more
// than once, from any goroutine that holds no Server lock.
func (c *Conn) teardown(cause error) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	c.state = stateClosed
	c.dropJobLocked()
	if c.registered {
		c.srv.poller.remove(c)
	}
	if c.nc != nil {
		_ = c.nc.Close()
	} else {
		_ = sysClose(c.fd)
	}
	c.wq, c.wbytes = nil, 0
	registered := c.registered
	c.mu.Unlock()

	c.srv.forget(c, registered)
	if cause != nil && !errors.Is(cause, io.EOF) && !errors.Is(cause, syscall.ECONNRESET) {
		c.srv.log.Debug("connection closed", "user", c.user, "cause", cause)
	}
}

// ---- replay

// beginHold starts holding live frames for a replay.
func (c *Conn) beginHold() {
	c.mu.Lock()
	c.hold = &holdState{replayed: newIDSet(maxRecent)}
	c.mu.Unlock()
}

var errConnClosed = errors.New("connection closed")

// endHoldLocked queues the ready frame, then the live frames held during
// the replay that the replay did not already send. The recent replayed
// messages (holdState.replayed) may still be in dispatch: their live
// copies are dropped for the next dedupe (server clock milliseconds).
func (c *Conn) endHoldLocked(ready *Frame, dedupe uint32) {
	h := c.hold
	c.hold = nil
	if c.state != stateOpen {
		return
	}
	if h != nil && h.replayed.len() > 0 && dedupe > 0 {
		c.recent = &recentSet{ids: h.replayed, until: c.srv.now() + dedupe}
	}
	c.queueLocked(ready.b)
	if h == nil {
		return
	}
	for _, f := range h.frames {
		if h.replayed.has(f.ID) {
			continue
		}
		if !c.queueLocked(f.b) {
			return
		}
	}
}
