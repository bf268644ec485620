package nbio

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/heraldpush/herald/benchmarks/baselines"
)

// maxWriteBuffer is how much nbio may buffer for one connection before it
// closes it: Herald's --write-queue-bytes default.
const maxWriteBuffer = 1 << 20

// Server is the nbio baseline: an nbhttp.Engine serving the contract.
type Server struct {
	cfg    baselines.Config
	hub    *hub
	engine *nbhttp.Engine // created by Start: nbhttp.NewEngine starts its task pool

	startOnce    sync.Once
	shutdownOnce sync.Once
	shutdownErr  error
}

var _ baselines.Server = (*Server)(nil)

// New returns the nbio baseline server; it starts nothing.
func New(cfg baselines.Config) (baselines.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, hub: &hub{conns: baselines.NewRegistry[*websocket.Conn]()}}, nil
}

// Start creates the engine, binds the listener and starts the pollers.
func (s *Server) Start() error {
	err := baselines.ErrStarted
	s.startOnce.Do(func() {
		engine := nbhttp.NewEngine(nbhttp.Config{
			Network:            "tcp",
			Addrs:              []string{s.cfg.Addr},
			Handler:            baselines.NewHandler(s.hub),
			IOMod:              nbhttp.IOModNonBlocking,
			MaxWriteBufferSize: maxWriteBuffer,
			// nbio splits messages longer than this (32 KiB by default) into
			// fragments; the contract wants every broadcast in one frame.
			MaxWebsocketFramePayloadSize: baselines.MaxBroadcastBytes,
			ReleaseWebsocketPayload:      true,
			SupportServerOnly:            true,
		})
		u := websocket.NewUpgrader()
		u.Engine = engine
		u.CheckOrigin = func(*http.Request) bool { return true }
		u.KeepaliveTime = 0
		u.MessageLengthLimit = baselines.MaxMessageBytes
		u.OnMessage(func(*websocket.Conn, websocket.MessageType, []byte) {})
		u.OnClose(func(c *websocket.Conn, _ error) { s.hub.conns.Remove(c) })
		s.hub.upgrader = u
		if err = engine.Start(); err != nil {
			// A failed listen has already stopped the engine.
			return
		}
		s.engine = engine
	})
	return err
}

// Addr is the bound address; nbhttp writes it back into Config.Addrs.
func (s *Server) Addr() string {
	if s.engine == nil {
		return ""
	}
	return s.engine.Addrs[0]
}

// Shutdown closes every WebSocket with a going-away frame, then stops the
// engine: its listener, its remaining connections, pollers and task pool.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.startOnce.Do(func() {}) // never started: nothing to stop
		errHub := s.hub.Close(ctx)
		var errEngine error
		if s.engine != nil {
			errEngine = s.engine.Shutdown(ctx)
		}
		s.shutdownErr = errors.Join(errHub, errEngine)
	})
	return s.shutdownErr
}

// hub implements baselines.Hub.
type hub struct {
	upgrader *websocket.Upgrader
	conns    *baselines.Registry[*websocket.Conn]
}

// ServeWS runs in the connection's serial executor, which also runs OnClose
// for it afterwards, so the connection cannot be removed before it is added.
func (h *hub) ServeWS(w http.ResponseWriter, r *http.Request, user string) {
	c, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request.
	}
	if err := c.WriteMessage(websocket.TextMessage, baselines.ReadyFrame(user)); err != nil {
		_ = c.Close()
		return
	}
	if !h.conns.Add(c) {
		_ = c.WriteClose(1001, "")
		_ = c.Close()
	}
}

// Broadcast never blocks: WriteMessage writes or buffers.
func (h *hub) Broadcast(payload []byte) int {
	return h.conns.Range(func(c *websocket.Conn) {
		_ = c.WriteMessage(websocket.TextMessage, payload)
	})
}

func (h *hub) Conns() int { return h.conns.Len() }

// Close writes a going-away frame to every connection and closes it; the
// engine's Shutdown waits for the rest.
func (h *hub) Close(context.Context) error {
	for _, c := range h.conns.Close() {
		_ = c.WriteClose(1001, "")
		_ = c.Close()
	}
	return nil
}
