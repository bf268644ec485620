package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldpush/herald/storage"
)

// Subprotocol is the WebSocket subprotocol the edge speaks. Browsers that
// pass the token as a subprotocol offer it alongside "bearer.<token>", and
// the edge selects it, so the token is never echoed back.
const Subprotocol = "herald.v1"

// tokenProtocolPrefix marks the subprotocol that carries a token.
const tokenProtocolPrefix = "bearer."

// ServeHTTP serves the WebSocket endpoint: it checks the request, the
// origin and the token, answers JSON errors before any upgrade, then
// upgrades, registers the connection and replays what it asked for.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.life.RLock()
	state := s.State()
	if state == StateRunning {
		s.hs.Add(1)
	}
	s.life.RUnlock()
	if state != StateRunning {
		w.Header().Set("Retry-After", "1")
		s.reject(w, http.StatusServiceUnavailable, "unavailable", "server is "+state.String()+"; reconnect to another node")
		return
	}
	defer s.hs.Done()

	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.reject(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	if n := headerCount(r.Header); n > s.cfg.MaxHeaderCount {
		s.reject(w, http.StatusRequestHeaderFieldsTooLarge, "too_many_headers", "request has too many header fields")
		return
	}
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		s.reject(w, http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
		return
	}
	if !s.originAllowed(r) {
		s.reject(w, http.StatusForbidden, "origin_not_allowed", "origin "+r.Header.Get("Origin")+" is not allowed")
		return
	}
	token := requestToken(r)
	if token == "" {
		s.reject(w, http.StatusUnauthorized, "missing_token", "pass a token as Authorization: Bearer, as subprotocol bearer.<token>, or as ?token=")
		return
	}
	rq, code, msg := s.parseResume(r.URL.Query())
	if code != "" {
		s.reject(w, http.StatusBadRequest, code, msg)
		return
	}

	// A bounded number of handshakes at a time; the rest wait briefly.
	select {
	case s.hsSem <- struct{}{}:
		defer func() { <-s.hsSem }()
	default:
		t := time.NewTimer(s.cfg.HandshakeTimeout)
		select {
		case s.hsSem <- struct{}{}:
			t.Stop()
			defer func() { <-s.hsSem }()
		case <-t.C:
			w.Header().Set("Retry-After", "1")
			s.reject(w, http.StatusServiceUnavailable, "busy", "too many connections at once; retry")
			return
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	id, err := s.cfg.Auth.Authenticate(ctx, token)
	cancel()
	switch {
	case errors.Is(err, ErrAuthUnavailable):
		w.Header().Set("Retry-After", "1")
		s.reject(w, http.StatusServiceUnavailable, "auth_unavailable", "authentication is unavailable; retry")
		return
	case err != nil:
		s.reject(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	case storage.ValidateUser(id.User) != nil:
		s.reject(w, http.StatusUnauthorized, "unauthorized", "token names no valid user")
		return
	case !id.Expires.IsZero() && !id.Expires.After(time.Now()):
		s.reject(w, http.StatusUnauthorized, "token_expired", "token has expired")
		return
	}

	up := ws.HTTPUpgrader{
		Timeout: s.cfg.HandshakeTimeout,
		Protocol: func(p string) bool {
			return p == Subprotocol
		},
	}
	nc, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		s.metrics.handshakes.WithLabelValues("bad_upgrade").Inc()
		s.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		return // the upgrader answered 400
	}
	s.metrics.handshakes.WithLabelValues("ok").Inc()
	var early []byte
	if rw != nil && rw.Reader.Buffered() > 0 {
		early, _ = rw.Reader.Peek(rw.Reader.Buffered())
	}
	s.open(nc, early, id, rq)
}

// resumeQuery is what a client asked to resume from: since= and seen=.
type resumeQuery struct {
	since string
	seen  map[string]struct{}
	exact bool // seen= was given: replay exactly what is after since and not seen
}

// parseResume reads since= and seen= (comma-separated IDs); a problem
// comes back as an error code and message for a 400.
func (s *Server) parseResume(q url.Values) (rq resumeQuery, code, msg string) {
	rq.since = q.Get("since")
	if rq.since != "" {
		if _, err := storage.ParseID(rq.since); err != nil {
			return rq, "bad_since", "since is not a message id"
		}
		if s.cfg.Replayer == nil {
			return rq, "replay_unsupported", "this node has no message store to replay from"
		}
	}
	if !q.Has("seen") {
		return rq, "", ""
	}
	rq.exact = true
	var ids []string
	for _, v := range q["seen"] {
		for _, id := range strings.Split(v, ",") {
			if id == "" {
				continue
			}
			if _, err := storage.ParseID(id); err != nil {
				return rq, "bad_seen", "seen holds something that is not a message id"
			}
			ids = append(ids, id)
		}
	}
	if len(ids) > s.cfg.MaxSeen {
		return rq, "bad_seen", fmt.Sprintf("seen lists %d ids; at most %d", len(ids), s.cfg.MaxSeen)
	}
	rq.seen = seenSet(ids)
	return rq, "", ""
}

// open makes an upgraded connection live and starts its replay.
func (s *Server) open(nc net.Conn, early []byte, id Identity, rq resumeQuery) {
	fd, keep, err := s.poller.detach(nc)
	if err != nil {
		s.log.Error("upgraded connection has no usable socket", "err", err)
		_ = nc.Close()
		return
	}
	if n := s.cfg.SendBufferBytes; n > 0 {
		if err := sysSetSendBuffer(fd, n); err != nil {
			s.log.Debug("capping the socket send buffer failed", "err", err)
		}
	}
	c := &Conn{srv: s, nc: keep, fd: fd, gen: s.gen.Add(1), user: id.User, slot: -1}
	if !id.Expires.IsZero() {
		c.expires = uint32(min(id.Expires.Unix(), 1<<32-1))
	}
	c.lastRead.Store(s.now())
	c.busy = true // this goroutine owns the read side until register
	// Without a cursor from the listener, this instant stands in: what is
	// accepted from here on reaches the connection live or by its replay.
	fallback := storage.IDAt(time.Now())
	if rq.since != "" {
		c.beginHold()
	}
	if len(early) > 0 { // frames the client sent right behind its request
		if !c.feed(append([]byte(nil), early...), false) && c.isClosed() {
			return
		}
	}
	if err := s.register(c); err != nil {
		return
	}
	cursor := ""
	if l := s.cfg.Listener; l != nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
		cursor = l.Settle(ctx, c.user)
		cancel()
	}
	if cursor == "" {
		cursor = fallback
		s.metrics.noCursor.Inc()
	}
	cursor = max(cursor, rq.since)
	if s.State() != StateRunning {
		// Drain began while this handshake ran, after it listed the
		// connections: send this one elsewhere too.
		s.drainConn(c)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return
	}
	// A resync asked before the connection was live waits for its ready.
	pre := c.job
	c.job, c.live = nil, true
	if rq.since == "" {
		c.endHoldLocked(encodeJSONFrame(readyFrame{Type: "ready", User: c.user, Node: s.cfg.NodeID, Cursor: cursor}), 0)
		if pre != nil && c.state == stateOpen {
			c.job = &replayJob{phase: jobAsked, waiters: pre.waiters}
			c.askLocked()
		}
		return
	}
	after := rq.since
	if w := s.cfg.ReplayWindow; w > 0 && !rq.exact {
		t, _ := storage.ParseID(rq.since) // validated by parseResume
		if floor := storage.IDAt(t.Add(-w)); floor < after {
			after = floor
		}
	}
	c.job = &replayJob{phase: jobQueued, since: rq.since, after: after, seen: rq.seen, cursor: cursor,
		cutoff: time.Now().Add(-s.cfg.ReplayDedupe)}
	if pre != nil {
		c.job.again = pre.waiters
	}
	s.replays.push(c) // takes only the pool's lock
}

// reject answers a handshake with a JSON error.
func (s *Server) reject(w http.ResponseWriter, status int, code, msg string) {
	s.metrics.handshakes.WithLabelValues(code).Inc()
	WriteError(w, status, code, msg)
}

// WriteError writes Herald's JSON error body:
// {"error":{"code":...,"message":...}}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, msg
	_ = json.NewEncoder(w).Encode(body)
}

// requestToken finds the token: Authorization: Bearer, then a
// bearer.<token> subprotocol, then ?token=.
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, tokenProtocolPrefix) {
				return p[len(tokenProtocolPrefix):]
			}
		}
	}
	return r.URL.Query().Get("token")
}

func headerCount(h http.Header) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// originAllowed applies the origin policy: no Origin (not a browser), the
// server's own host, or a configured origin.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, allowed := range s.cfg.AllowedOrigins {
		if allowed == "*" || originMatches(allowed, u) {
			return true
		}
	}
	return false
}

// originMatches compares an allowed origin (scheme://host[:port], with an
// optional leading "*." in the host) with a request's origin.
func originMatches(allowed string, origin *url.URL) bool {
	a, err := url.Parse(allowed)
	if err != nil || !strings.EqualFold(a.Scheme, origin.Scheme) {
		return false
	}
	if rest, ok := strings.CutPrefix(a.Host, "*."); ok {
		host := strings.ToLower(origin.Host)
		return strings.HasSuffix(host, "."+strings.ToLower(rest))
	}
	return strings.EqualFold(a.Host, origin.Host)
}

// HTTPServer returns an http.Server for handler (which should route /ws to
// s) with the edge's handshake limits: the request header must arrive
// within HandshakeTimeout and fit in MaxHeaderBytes. The limits apply to
// every request on that server.
func (s *Server) HTTPServer(handler http.Handler) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slogErrorLog(s.log),
	}
}
