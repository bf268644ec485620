package edge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gobwas/ws"
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
// {"type":"message","id":...,"data":...,"ts":<unix ms>}. data must be valid
// JSON; it is copied verbatim.
func EncodeMessage(id string, data json.RawMessage, ts time.Time) *Frame {
	var idBuf [64]byte
	idJSON := appendJSONString(idBuf[:0], id)
	var tsBuf [20]byte
	tsB := strconv.AppendInt(tsBuf[:0], ts.UnixMilli(), 10)
	const pre, mid, post = `{"type":"message","id":`, `,"data":`, `,"ts":`
	n := len(pre) + len(idJSON) + len(mid) + len(data) + len(post) + len(tsB) + 1
	b := make([]byte, 0, frameHeaderLen(n)+n)
	b = appendFrameHeader(b, ws.OpText, n)
	b = append(b, pre...)
	b = append(b, idJSON...)
	b = append(b, mid...)
	b = append(b, data...)
	b = append(b, post...)
	b = append(b, tsB...)
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
// has begun. Cursor is a since value that covers everything from this
// connection's start: a client that saw no message yet reconnects with it.
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

// pongFrame answers an application-level {"type":"ping"}.
var pongFrame = encodeJSONFrame(struct {
	Type string `json:"type"`
}{"pong"})

// clientMessage is a decoded client text frame.
type clientMessage struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// Client message types.
const (
	clientAck  = "ack"
	clientPing = "ping"
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
