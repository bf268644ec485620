package baselines

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// ErrStarted is returned by a second call to Start.
var ErrStarted = errors.New("baselines: server already started")

// HTTPServer serves [NewHandler] for a Hub on a net/http server. The gorilla,
// gobwas and gws baselines use it; nbio brings its own HTTP engine.
type HTTPServer struct {
	cfg  Config
	hub  Hub
	srv  *http.Server
	ln   net.Listener
	done chan struct{} // closed when Serve has returned

	startOnce    sync.Once
	shutdownOnce sync.Once
	shutdownErr  error
}

// NewHTTPServer returns a server for hub; it starts nothing.
func NewHTTPServer(cfg Config, hub Hub) (*HTTPServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &HTTPServer{cfg: cfg, hub: hub, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler: NewHandler(hub),
		// Bound the request header so an idle TCP connection cannot hold a
		// handler goroutine forever; the WebSocket itself has no timeout.
		ReadHeaderTimeout: 10 * time.Second,
	}
	return s, nil
}

// Start binds the listener and serves in a goroutine.
func (s *HTTPServer) Start() error {
	err := ErrStarted
	s.startOnce.Do(func() {
		var ln net.Listener
		ln, err = net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			err = fmt.Errorf("baselines: listen: %w", err)
			close(s.done)
			return
		}
		s.ln = ln
		go func() {
			defer close(s.done)
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.cfg.Log().Error("serve", "err", err)
			}
		}()
	})
	return err
}

// Addr is the bound address, or "" before Start.
func (s *HTTPServer) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting, waits for in-flight HTTP handlers, then closes
// every WebSocket through the hub (hijacked connections are not net/http's
// to close) and waits for the hub's goroutines.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.startOnce.Do(func() { close(s.done) }) // never started: nothing to wait for
		errHTTP := s.srv.Shutdown(ctx)
		select {
		case <-s.done:
		case <-ctx.Done():
		}
		errHub := s.hub.Close(ctx)
		s.shutdownErr = errors.Join(errHTTP, errHub)
	})
	return s.shutdownErr
}
