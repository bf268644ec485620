package edge

import "strconv"

// CloseCode is a WebSocket close code. Herald's own codes follow one rule a
// client can act on without knowing them all (docs/PROTOCOL.md):
//
//   - 4000-4399: transient. Reconnect with backoff (after the delay in a
//     preceding "reconnect" frame, if any) and resume with since=<last id>.
//   - 4400-4999: the client's fault. Reconnecting with the same input fails
//     the same way; fix the client first.
//
// Standard codes keep their RFC 6455 meaning.
type CloseCode uint16

// Close codes sent by the edge.
const (
	CloseNormal      CloseCode = 1000 // the client asked to close
	CloseGoingAway   CloseCode = 1001 // the server is stopping without a drain
	CloseProtocol    CloseCode = 1002 // a WebSocket protocol violation
	CloseUnsupported CloseCode = 1003 // a binary frame: the protocol is JSON text
	CloseBadUTF8     CloseCode = 1007 // a text frame that is not valid UTF-8
	CloseTooBig      CloseCode = 1009 // a message over the configured limit
	CloseInternal    CloseCode = 1011 // an unexpected server error

	CloseRestart      CloseCode = 4000 // the node is draining: reconnect elsewhere
	CloseIdle         CloseCode = 4001 // nothing received within the idle timeout
	CloseResync       CloseCode = 4003 // a resync went unanswered: reconnect and resume
	CloseReplayFailed CloseCode = 4005 // the store could not replay: retry later
	CloseSlowConsumer CloseCode = 4008 // the client fell too far behind
	CloseTokenExpired CloseCode = 4010 // the token expired: reconnect with a new one

	CloseBadMessage CloseCode = 4400 // a client frame that is not a valid message
)

// Reconnect reports whether a client should reconnect after code.
func (c CloseCode) Reconnect() bool {
	switch {
	case c >= 4000 && c < 4400:
		return true
	case c == CloseGoingAway, c == CloseInternal:
		return true
	}
	return false
}

func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseGoingAway:
		return "going away"
	case CloseProtocol:
		return "protocol error"
	case CloseUnsupported:
		return "unsupported data"
	case CloseBadUTF8:
		return "invalid utf-8"
	case CloseTooBig:
		return "message too big"
	case CloseInternal:
		return "internal error"
	case CloseRestart:
		return "restart"
	case CloseIdle:
		return "idle timeout"
	case CloseResync:
		return "resync"
	case CloseReplayFailed:
		return "replay failed"
	case CloseSlowConsumer:
		return "slow consumer"
	case CloseTokenExpired:
		return "token expired"
	case CloseBadMessage:
		return "bad message"
	}
	return strconv.Itoa(int(c))
}
