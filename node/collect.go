package node

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/storage"
)

// apiError is an error answered to an API caller: a status and a stable
// code (docs/API.md lists them) with a human message.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(code, format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	edge.WriteError(w, e.Status, e.Code, e.Message)
}

// postRequest is the body of POST /v1/messages.
type postRequest struct {
	To        []string        `json:"to"`
	Broadcast bool            `json:"broadcast"`
	Data      json.RawMessage `json:"data"`
	TTL       string          `json:"ttl"`
	Key       string          `json:"key"`
}

// postLimits are what decodePost enforces.
type postLimits struct {
	maxData            int
	defaultTTL, maxTTL time.Duration
}

// decodedPost is a valid request, ready to become a storage.Message.
type decodedPost struct {
	to        []string // deduplicated, in first-seen order
	broadcast bool
	data      json.RawMessage
	ttl       time.Duration
	key       string
}

// decodePost parses and validates a request body. Every failure is an
// apiError for the caller.
func decodePost(body []byte, lim postLimits) (*decodedPost, *apiError) {
	if !utf8.Valid(body) {
		return nil, badRequest("invalid_utf8", "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req postRequest
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest("bad_json", "request body is not a valid message object: %s", jsonReason(err))
	}
	if dec.More() {
		return nil, badRequest("bad_json", "request body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("bad_json", "request body has data after the JSON object")
	}
	p := &decodedPost{broadcast: req.Broadcast, key: req.Key}
	switch {
	case req.Broadcast && len(req.To) > 0:
		return nil, badRequest("bad_recipients", "give either to or broadcast, not both")
	case !req.Broadcast && len(req.To) == 0:
		return nil, badRequest("missing_recipients", "to must list at least one user, or set broadcast to true")
	case len(req.To) > storage.MaxRecipients:
		return nil, badRequest("too_many_recipients", "to lists %d users; at most %d per message", len(req.To), storage.MaxRecipients)
	}
	seen := make(map[string]struct{}, len(req.To))
	for i, u := range req.To {
		if err := storage.ValidateUser(u); err != nil {
			return nil, badRequest("bad_recipient", "to[%d]: %s", i, strings.TrimPrefix(err.Error(), storage.ErrInvalid.Error()+": "))
		}
		if _, dup := seen[u]; !dup {
			seen[u] = struct{}{}
			p.to = append(p.to, u)
		}
	}
	data := bytes.TrimSpace(req.Data)
	switch {
	case len(data) == 0:
		return nil, badRequest("missing_data", "data is required (any JSON value)")
	case len(data) > lim.maxData:
		return nil, &apiError{http.StatusRequestEntityTooLarge, "message_too_large",
			fmt.Sprintf("data is %d bytes; at most %d", len(data), lim.maxData)}
	}
	p.data = data
	p.ttl = lim.defaultTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return nil, badRequest("bad_ttl", "ttl %q is not a duration such as \"90s\", \"30m\" or \"24h\"", truncate(req.TTL))
		}
		if d < time.Second || d > lim.maxTTL {
			return nil, badRequest("bad_ttl", "ttl must be between 1s and %v", lim.maxTTL)
		}
		p.ttl = d
	}
	if len(req.Key) > storage.MaxKeyLen {
		return nil, badRequest("bad_key", "key is longer than %d bytes", storage.MaxKeyLen)
	}
	return p, nil
}

func jsonReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of body"
	}
	return err.Error() // unknown field "x" and the like
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// collector serves POST /v1/messages.
type collector struct {
	n *Node
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := c.n
	if !n.beginPost() {
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, "draining", "this node is leaving the cluster; send to another node"})
		n.metrics.postDraining.Inc()
		return
	}
	defer n.posts.Done()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeAPIError(w, &apiError{http.StatusMethodNotAllowed, "method_not_allowed", "use POST"})
		return
	}
	if !n.apiKeyOK(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		writeAPIError(w, &apiError{http.StatusUnauthorized, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)"})
		n.metrics.postUnauthorized.Inc()
		return
	}
	// The body is JSON whatever the Content-Type says, so that a plain
	// "curl -d" works; only a multipart upload is clearly something else.
	// (Cross-site forms cannot forge the Authorization header.)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); strings.HasPrefix(mt, "multipart/") {
		writeAPIError(w, &apiError{http.StatusUnsupportedMediaType, "unsupported_media_type", "send the message as a JSON body"})
		return
	}
	limit := int64(n.cfg.MaxMessageBytes) + maxEnvelopeBytes
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeAPIError(w, &apiError{http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("request body is over %d bytes", limit)})
			n.metrics.postRejected.Inc()
			return
		}
		writeAPIError(w, badRequest("bad_body", "reading the body: %v", err))
		return
	}
	p, aerr := decodePost(body, postLimits{maxData: n.cfg.MaxMessageBytes, defaultTTL: n.cfg.DefaultTTL, maxTTL: n.cfg.MaxTTL})
	if aerr != nil {
		n.metrics.postRejected.Inc()
		writeAPIError(w, aerr)
		return
	}
	if n.resolver.full() {
		n.metrics.postUnavailable.Inc()
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, "store_unavailable",
			"the message store is unavailable; nothing was accepted, retry with the same key"})
		return
	}
	// The ID is open in the tracker from here until the message is routed
	// (or settled as never stored): no push node's cursor passes it.
	id, at := n.tracker.Issue()
	m := &storage.Message{
		ID: id, To: p.to, Broadcast: p.broadcast, Data: p.data, Key: p.key,
		CreatedAt: at, ExpiresAt: at.Add(p.ttl),
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.AppendTimeout)
	defer cancel()
	start := time.Now()
	stored, err := n.cfg.Messages.Append(ctx, m)
	n.metrics.appendSeconds.Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, storage.ErrDuplicate) && stored != nil:
		n.tracker.Done(id)
		n.metrics.postDuplicate.Inc()
		// The first try may never have been dispatched (its store write
		// timed out, and it was stored after all): dispatch it again.
		// Clients drop the second copy by ID.
		if stored != nil && stored.ExpiresAt.After(time.Now()) {
			_ = n.dispatch.submit(context.WithoutCancel(r.Context()), stored, false)
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"id": stored.ID, "duplicate": true})
		return
	case errors.Is(err, storage.ErrInvalid):
		n.tracker.Done(id)
		writeAPIError(w, badRequest("invalid_message", "%v", err))
		return
	case err != nil:
		// Unavailable, a timeout, or anything else: the store may have
		// written it. The resolver settles it; meanwhile its ID stays open.
		n.resolver.add(m)
		n.metrics.postUnavailable.Inc()
		if !errors.Is(err, storage.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			n.log.Error("append failed", "id", id, "err", err)
		}
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, "store_unavailable",
			"the message store is unavailable; nothing was accepted, retry with the same key"})
		return
	}
	n.metrics.postAccepted.Inc()
	// Durable now: hand it to dispatch, waiting for room if dispatch is
	// saturated, before answering: accepted means on its way.
	if err := n.dispatch.submit(context.WithoutCancel(r.Context()), stored, true); err != nil {
		// The node stops: the ID stays open, as on a crash; the message
		// is stored and recovered from the store.
		n.log.Warn("stopping with an accepted message not dispatched", "id", id)
	}
	// The ID is of the ID alphabet: no JSON escaping needed.
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"id":"` + stored.ID + `"}` + "\n"))
}

// maxEnvelopeBytes is what a POST body may hold beyond its data:
// recipients (up to MaxRecipients IDs), ttl and key.
const maxEnvelopeBytes = 1 << 20

func (n *Node) apiKeyOK(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		return false
	}
	got := []byte(strings.TrimSpace(h[7:]))
	ok := 0
	for _, k := range n.cfg.APIKeys {
		ok |= subtle.ConstantTimeCompare(got, []byte(k))
	}
	return ok == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
