package edge

import (
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"
)

// The edge parses client frames from byte slices it already holds, instead
// of reading them from a stream, so that a connection with a partial frame
// holds only the bytes received so far and a connection with none holds no
// buffer at all. Headers are checked before any payload is buffered.

// header is a parsed frame header.
type header struct {
	fin    bool
	rsv    byte // the three reserved bits, in the low bits
	op     ws.OpCode
	masked bool
	mask   [4]byte
	length int64
}

// errBadLength is a 64-bit length with its most significant bit set.
var errBadLength = errors.New("frame length has the most significant bit set")

// maxHeaderLen is the largest frame header: 2 + 8 (length) + 4 (mask).
const maxHeaderLen = 14

// parseHeader parses the frame header at the start of b. It returns the
// header length, or 0 when b does not yet hold the whole header.
func parseHeader(b []byte) (h header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x7
	h.op = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		v := binary.BigEndian.Uint64(b[2:10])
		if v>>63 != 0 {
			return h, 0, errBadLength
		}
		h.length = int64(v)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// knownOpCode reports whether op is defined by RFC 6455.
func knownOpCode(op ws.OpCode) bool {
	switch op {
	case ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
		return true
	}
	return false
}

// appendFrame appends an unmasked server frame to dst.
func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = appendFrameHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// appendFrameHeader appends the header of an unmasked, final server frame
// with a payload of n bytes.
func appendFrameHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// frameHeaderLen is the header length of a server frame with n bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// closePayload builds a close frame payload: code and a reason cut to fit a
// control frame.
func closePayload(code CloseCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return append(p, reason...)
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 section 7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
