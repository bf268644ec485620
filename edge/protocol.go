package edge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldpush/herald/storage"
)

// Frame is a server frame encoded once, ready to be written to any number of
// connections. Its bytes are never modified after encoding.
type Frame struct {
	// ID is the message ID for message frames (replay deduplication), or "".
	ID string
	b  []byte
}

// Len is the encoded size of the frame, header included.
func (f *Frame) Len() int { return len(f.b) }

// Bytes returns the encoded WebSocket frame. Callers must not modify it.
func (f *Frame) Bytes() []byte { return f.b }

// EncodeMessage encodes the server frame that delivers one message:
// {"type":"message","id":...,"data":...,"ts":<unix ms>,"cursor":...}.
// data must be valid JSON; it is copied verbatim. cursor is the resume
// position the frame carries (see docs/PROTOCOL.md): every message at or
// below it that this connection should get was queued before this frame.
// It is left out when empty (replayed messages carry none).
func EncodeMessage(id string, data json.RawMessage, ts time.Time, cursor string) *Frame {
	var idBuf [64]byte
	idJSON := appendJSONString(idBuf[:0], id)
	var tsBuf [20]byte
	tsB := strconv.AppendInt(tsBuf[:0], ts.UnixMilli(), 10)
	var curBuf [64]byte
	var curJSON []byte
	if cursor != "" {
		curJSON = appendJSONString(curBuf[:0], cursor)
	}
	const pre, mid, post, cur = `{"type":"message","id":`, `,"data":`, `,"ts":`, `,"cursor":`
	n := len(pre) + len(idJSON) + len(mid) + len(data) + len(post) + len(tsB) + 1
	if curJSON != nil {
		n += len(cur) + len(curJSON)
	}
	b := make([]byte, 0, frameHeaderLen(n)+n)
	b = appendFrameHeader(b, ws.OpText, n)
	b = append(b, pre...)
	b = append(b, idJSON...)
	b = append(b, mid...)
	b = append(b, data...)
	b = append(b, post...)
	b = append(b, tsB...)
	if curJSON != nil {
		b = append(b, cur...)
		b = append(b, curJSON...)
	}
	b = append(b, '}')
	return &Frame{ID: id, b: b}
}

// encodeJSONFrame encodes v as a text frame.
func encodeJSONFrame(v any) *Frame {
	p, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("edge: encode %T: %v", v, err)) // only fixed struct types are encoded
	}
	return &Frame{b: appendFrame(make([]byte, 0, len(p)+maxHeaderLen), ws.OpText, p)}
}

func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			p, _ := json.Marshal(s) // marshalling a string cannot fail
			return append(dst, p...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// readyFrame tells the client that replay is complete and live delivery
// has begun (again, after a resync). Cursor is a since value: every
// message at or below it that the client should get came before this
// frame. The client resumes from the greatest cursor it has received.
type readyFrame struct {
	Type     string `json:"type"` // "ready"
	User     string `json:"user"`
	Node     string `json:"node,omitempty"`
	Replayed int    `json:"replayed"`
	Cursor   string `json:"cursor"`
}

// reconnectFrame precedes a CloseRestart: where and when to reconnect.
type reconnectFrame struct {
	Type    string `json:"type"` // "reconnect"
	URL     string `json:"url,omitempty"`
	DelayMS int64  `json:"delay_ms"`
}

// resyncFrame asks the client for its resume position
// ({"type":"resume",...}): the server may have missed deliveries for it
// and will replay what the client has not got.
var resyncFrame = encodeJSONFrame(struct {
	Type string `json:"type"`
}{"resync"})

// pongFrame answers an application-level {"type":"ping"}.
var pongFrame = encodeJSONFrame(struct {
	Type string `json:"type"`
}{"pong"})

// clientMessage is a decoded client text frame.
type clientMessage struct {
	Type  string   `json:"type"`
	ID    string   `json:"id,omitempty"`
	Since string   `json:"since,omitempty"`
	Seen  []string `json:"seen,omitempty"`
}

// Client message types.
const (
	clientAck    = "ack"
	clientPing   = "ping"
	clientResume = "resume"
)

// errBadClientMessage is a text frame that is not a client message.
var errBadClientMessage = errors.New("not a client message")

// decodeClientMessage decodes a client text frame. Unknown types decode
// without error (the edge ignores them, so newer clients can talk to older
// servers); a frame that is not a JSON object with a string "type", or an
// ack without an id, is an error.
func decodeClientMessage(p []byte) (clientMessage, error) {
	if m, ok := decodeAck(p); ok {
		return m, nil
	}
	var m clientMessage
	if err := json.Unmarshal(p, &m); err != nil {
		return m, fmt.Errorf("%w: %v", errBadClientMessage, err)
	}
	switch {
	case m.Type == "":
		return m, fmt.Errorf("%w: missing type", errBadClientMessage)
	case m.Type == clientAck && m.ID == "":
		return m, fmt.Errorf("%w: ack without id", errBadClientMessage)
	case m.Type == clientResume:
		if m.Since != "" {
			if _, err := storage.ParseID(m.Since); err != nil {
				return m, fmt.Errorf("%w: resume since is not a message id", errBadClientMessage)
			}
		}
		for _, id := range m.Seen {
			if _, err := storage.ParseID(id); err != nil {
				return m, fmt.Errorf("%w: resume seen holds something that is not a message id", errBadClientMessage)
			}
		}
	}
	return m, nil
}

// ackPrefix and ackSuffix frame the ack the JS client and most clients send,
// byte for byte: {"type":"ack","id":"<id>"}.
const (
	ackPrefix = `{"type":"ack","id":"`
	ackSuffix = `"}`
)

// decodeAck recognises the common ack without encoding/json, which would
// cost more than the rest of handling it. Anything else (other spacing,
// escapes, more fields) returns ok=false for the full decoder.
func decodeAck(p []byte) (clientMessage, bool) {
	if len(p) <= len(ackPrefix)+len(ackSuffix) || string(p[:len(ackPrefix)]) != ackPrefix ||
		string(p[len(p)-len(ackSuffix):]) != ackSuffix {
		return clientMessage{}, false
	}
	id := p[len(ackPrefix) : len(p)-len(ackSuffix)]
	for _, b := range id {
		if b < 0x20 || b >= 0x7f || b == '"' || b == '\\' {
			return clientMessage{}, false
		}
	}
	return clientMessage{Type: clientAck, ID: string(id)}, true
}
