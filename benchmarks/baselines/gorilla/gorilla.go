package gorilla

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldpush/herald/benchmarks/baselines"
)

const (
	// writeWait is the chat example's deadline for one write.
	writeWait = 10 * time.Second
	// sendQueue is the chat example's per-client channel size.
	sendQueue = 256
)

// New returns the gorilla baseline server; it starts nothing.
func New(cfg baselines.Config) (baselines.Server, error) {
	return baselines.NewHTTPServer(cfg, newHub())
}

// hub implements baselines.Hub.
type hub struct {
	upgrader websocket.Upgrader
	clients  *baselines.Registry[*client] // and their readPump and writePump goroutines
}

func newHub() *hub {
	return &hub{
		upgrader: websocket.Upgrader{
			// The contract accepts any Origin.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		clients: baselines.NewRegistry[*client](),
	}
}

// client is the chat example's Client.
type client struct {
	conn *websocket.Conn
	send chan *websocket.PreparedMessage
	done chan struct{} // closed to make writePump close the connection
	once sync.Once
}

func (c *client) stop() { c.once.Do(func() { close(c.done) }) }

func (h *hub) ServeWS(w http.ResponseWriter, r *http.Request, user string) {
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request.
	}
	_ = conn.SetWriteDeadline(time.Now().Add(writeWait))
	if err := conn.WriteMessage(websocket.TextMessage, baselines.ReadyFrame(user)); err != nil {
		_ = conn.Close()
		return
	}
	c := &client{
		conn: conn,
		send: make(chan *websocket.PreparedMessage, sendQueue),
		done: make(chan struct{}),
	}
	// The chat example starts both pumps in new goroutines so the handler
	// returns and its memory can be collected.
	if !h.clients.Add(c, func() { h.writePump(c) }, func() { h.readPump(c) }) {
		_ = conn.Close() // shutting down
	}
}

// readPump reads and discards everything the client sends. gorilla's default
// handlers answer pings and close frames from inside NextReader.
func (h *hub) readPump(c *client) {
	defer func() {
		h.clients.Remove(c)
		c.stop()
		_ = c.conn.Close()
	}()
	c.conn.SetReadLimit(baselines.MaxMessageBytes)
	for {
		// NextReader discards the unread rest of the previous message.
		if _, _, err := c.conn.NextReader(); err != nil {
			return
		}
	}
}

// writePump is the only goroutine that writes data frames to c.conn.
func (h *hub) writePump(c *client) {
	defer func() { _ = c.conn.Close() }()
	for {
		select {
		case pm := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WritePreparedMessage(pm); err != nil {
				return
			}
		case <-c.done:
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
			_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(baselines.CloseTimeout))
			return
		}
	}
}

func (h *hub) Broadcast(payload []byte) int {
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, payload)
	if err != nil {
		return 0
	}
	return h.clients.Range(func(c *client) {
		select {
		case c.send <- pm:
		default:
			// The chat example's policy for a client that cannot keep up.
			c.stop()
		}
	})
}

func (h *hub) Conns() int { return h.clients.Len() }

func (h *hub) Close(ctx context.Context) error {
	clients := h.clients.Close()
	for _, c := range clients {
		c.stop()
	}
	err := h.clients.Wait(ctx)
	if err != nil {
		// Out of time: unblock pumps stuck in a write.
		for _, c := range clients {
			_ = c.conn.Close()
		}
	}
	return err
}
