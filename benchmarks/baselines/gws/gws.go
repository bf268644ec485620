package gws

import (
	"context"
	"net/http"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldpush/herald/benchmarks/baselines"
)

// writeWait bounds how long a connection may take to accept a broadcast frame.
const writeWait = 10 * time.Second

// New returns the gws baseline server; it starts nothing.
func New(cfg baselines.Config) (baselines.Server, error) {
	return baselines.NewHTTPServer(cfg, newHub())
}

// hub implements baselines.Hub and gws.Event.
type hub struct {
	upgrader *gws.Upgrader
	conns    *baselines.Registry[*gws.Conn] // and their ReadLoop goroutines
}

func newHub() *hub {
	h := &hub{conns: baselines.NewRegistry[*gws.Conn]()}
	h.upgrader = gws.NewUpgrader(h, &gws.ServerOption{
		ReadMaxPayloadSize: baselines.MaxMessageBytes,
	})
	return h
}

func (h *hub) ServeWS(w http.ResponseWriter, r *http.Request, user string) {
	socket, err := h.upgrader.Upgrade(w, r)
	if err != nil {
		return // Upgrade has answered the request.
	}
	// Nothing else can write yet: the connection is not registered.
	_ = socket.SetWriteDeadline(time.Now().Add(writeWait))
	if err := socket.WriteMessage(gws.OpcodeText, baselines.ReadyFrame(user)); err != nil {
		return // gws has closed the connection
	}
	// The README runs ReadLoop in its own goroutine so the handler returns.
	if !h.conns.Add(socket, socket.ReadLoop) {
		_ = socket.WriteClose(1001, nil) // shutting down
	}
}

func (h *hub) Broadcast(payload []byte) int {
	b := gws.NewBroadcaster(gws.OpcodeText, payload)
	defer func() { _ = b.Close() }()
	deadline := time.Now().Add(writeWait)
	return h.conns.Range(func(socket *gws.Conn) {
		_ = socket.SetWriteDeadline(deadline)
		_ = b.Broadcast(socket)
	})
}

func (h *hub) Conns() int { return h.conns.Len() }

func (h *hub) Close(ctx context.Context) error {
	conns := h.conns.Close()
	for _, socket := range conns {
		_ = socket.SetWriteDeadline(time.Now().Add(baselines.CloseTimeout))
		// WriteClose writes now (after any write in progress, which the
		// deadline now bounds) and closes the connection; ReadLoop then ends.
		_ = socket.WriteClose(1001, nil)
	}
	err := h.conns.Wait(ctx)
	if err != nil {
		for _, socket := range conns {
			_ = socket.NetConn().Close()
		}
	}
	return err
}

// gws.Event: called from the connection's ReadLoop goroutine.

func (h *hub) OnOpen(*gws.Conn) {}

func (h *hub) OnClose(socket *gws.Conn, _ error) { h.conns.Remove(socket) }

func (h *hub) OnPing(socket *gws.Conn, payload []byte) { _ = socket.WritePong(payload) }

func (h *hub) OnPong(*gws.Conn, []byte) {}

func (h *hub) OnMessage(_ *gws.Conn, message *gws.Message) { _ = message.Close() }
