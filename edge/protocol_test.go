package edge

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func closeFrame(code uint16, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, code)
	return maskedFrame(true, 0, ws.OpClose, append(p, reason...))
}

func TestProtocolPingPong(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		c := dialRaw(t, e, "alice", nil)
		c.expectText() // ready
		c.write(maskedFrame(true, 0, ws.OpPing, []byte("are you there")))
		op, p := c.next()
		if op != ws.OpPong || string(p) != "are you there" {
			t.Fatalf("got %v %q, want pong with the ping's payload", op, p)
		}
		c.write(maskedFrame(true, 0, ws.OpPong, []byte("unsolicited"))) // ignored
		c.write(maskedFrame(true, 0, ws.OpPing, nil))
		if op, p := c.next(); op != ws.OpPong || len(p) != 0 {
			t.Fatalf("got %v %q, want empty pong", op, p)
		}
	})
}

func TestProtocolFragmentsWithInterleavedControl(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		c := dialRaw(t, e, "alice", nil)
		c.expectText()
		ack := []byte(`{"type":"ack","id":"fragmented-id"}`)
		var b []byte
		b = append(b, maskedFrame(false, 0, ws.OpText, ack[:5])...)
		b = append(b, maskedFrame(true, 0, ws.OpPing, []byte("mid"))...) // control frame between fragments
		b = append(b, maskedFrame(false, 0, ws.OpContinuation, ack[5:20])...)
		b = append(b, maskedFrame(false, 0, ws.OpContinuation, nil)...) // empty fragment
		b = append(b, maskedFrame(true, 0, ws.OpContinuation, ack[20:])...)
		// Dribble the bytes one at a time: frames arrive split anywhere.
		for i := range b {
			c.write(b[i : i+1])
		}
		if op, p := c.next(); op != ws.OpPong || string(p) != "mid" {
			t.Fatalf("got %v %q, want pong mid", op, p)
		}
		eventually(t, 5*time.Second, "reassembled ack", func() bool {
			_, _, acks := e.rec.snapshot()
			return slices.Equal(acks, []string{"alice/fragmented-id"})
		})
		// A fragmented multi-byte character split across frames is fine.
		ping := []byte(`{"type":"ping","x":"é"}`)
		cut := bytes.IndexByte(ping, 0xc3) + 1
		c.write(append(maskedFrame(false, 0, ws.OpText, ping[:cut]), maskedFrame(true, 0, ws.OpContinuation, ping[cut:])...))
		if f := c.expectText(); f.Type != "pong" {
			t.Fatalf("got %+v", f)
		}
	})
}

func TestProtocolManyFramesInOneWrite(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	c := dialRaw(t, e, "alice", nil)
	c.expectText()
	var b []byte
	for range 200 {
		b = append(b, maskedFrame(true, 0, ws.OpText, []byte(`{"type":"ping"}`))...)
	}
	c.write(b)
	for i := range 200 {
		if f := c.expectText(); f.Type != "pong" {
			t.Fatalf("frame %d: %+v", i, f)
		}
	}
}

func TestProtocolEarlyFramesWithHandshake(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	// A client may pipeline frames right behind its upgrade request.
	c := dialRaw(t, e, "alice", maskedFrame(true, 0, ws.OpText, []byte(`{"type":"ping"}`)))
	got := []string{c.expectText().Type, c.expectText().Type}
	slices.Sort(got)
	if !slices.Equal(got, []string{"pong", "ready"}) {
		t.Fatalf("got %v", got)
	}
}

func TestProtocolCloseHandshake(t *testing.T) {
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, nil)
		c := dialRaw(t, e, "alice", nil)
		c.expectText()
		c.write(closeFrame(4321, "bye now"))
		c.expectClose(4321) // echoed, then the server closes TCP
		eventually(t, 5*time.Second, "connection forgotten", func() bool { return e.srv.Connections() == 0 })

		// An empty close frame is answered with an empty one.
		c2 := dialRaw(t, e, "bob", nil)
		c2.expectText()
		c2.write(maskedFrame(true, 0, ws.OpClose, nil))
		op, p := c2.next()
		if op != ws.OpClose || len(p) != 0 {
			t.Fatalf("got %v %q, want empty close", op, p)
		}
		c2.expectEOF()
	})
}

func TestProtocolServerInitiatedClose(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil)
	c := dialRaw(t, e, "alice", nil)
	c.expectText()
	conns := e.srv.registry.conns()
	if len(conns) != 1 {
		t.Fatalf("%d conns", len(conns))
	}
	conns[0].Close(CloseRestart, "restart")
	op, p := c.next()
	if op != ws.OpClose || binary.BigEndian.Uint16(p) != uint16(CloseRestart) || string(p[2:]) != "restart" {
		t.Fatalf("got %v %q", op, p)
	}
	// The server half-closed and waits for our close frame.
	c.expectEOF()
	if e.srv.Connections() != 1 {
		t.Fatal("server dropped the connection before the closing handshake completed")
	}
	c.write(closeFrame(uint16(CloseRestart), ""))
	eventually(t, 5*time.Second, "closing handshake done", func() bool { return e.srv.Connections() == 0 })
}

func TestProtocolCloseTimeout(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, func(c *Config) { c.CloseTimeout = 100 * time.Millisecond })
	c := dialRaw(t, e, "alice", nil)
	c.expectText()
	e.srv.registry.conns()[0].Close(CloseRestart, "")
	// We never answer; the server gives up after CloseTimeout.
	eventually(t, 5*time.Second, "close timeout", func() bool { return e.srv.Connections() == 0 })
}

func TestProtocolViolations(t *testing.T) {
	long := make([]byte, 0, 8)
	long = binary.BigEndian.AppendUint64(long, 1<<62)
	huge := append([]byte{0x81, 0x80 | 127}, long...) // claims 2^62 bytes, masked
	huge = append(huge, 1, 2, 3, 4)
	msb := append([]byte{0x81, 0x80 | 127}, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4)
	over := maskedFrame(true, 0, ws.OpText, bytes.Repeat([]byte("a"), 1024+1))
	over = over[:len(over)-1000] // only part of the payload: the header alone must trigger 1009
	cases := []struct {
		name string
		send []byte
		want CloseCode
	}{
		{"unmasked frame", rawFrame(true, 0, ws.OpText, []byte(`{"type":"ping"}`), false), CloseProtocol},
		{"reserved bit 1", maskedFrame(true, 4, ws.OpText, []byte(`{}`)), CloseProtocol},
		{"reserved bit 3", maskedFrame(true, 1, ws.OpPing, nil), CloseProtocol},
		{"unknown data opcode", maskedFrame(true, 0, 3, nil), CloseProtocol},
		{"unknown control opcode", maskedFrame(true, 0, 0xB, nil), CloseProtocol},
		{"continuation first", maskedFrame(true, 0, ws.OpContinuation, []byte("x")), CloseProtocol},
		{"message inside fragments", append(maskedFrame(false, 0, ws.OpText, []byte("{")), maskedFrame(true, 0, ws.OpText, []byte("{}"))...), CloseProtocol},
		{"fragmented ping", maskedFrame(false, 0, ws.OpPing, nil), CloseProtocol},
		{"ping over 125 bytes", maskedFrame(true, 0, ws.OpPing, bytes.Repeat([]byte("p"), 126)), CloseProtocol},
		{"close with 1-byte payload", maskedFrame(true, 0, ws.OpClose, []byte{3}), CloseProtocol},
		{"close code 1005", closeFrame(1005, ""), CloseProtocol},
		{"close code 999", closeFrame(999, ""), CloseProtocol},
		{"close code 5000", closeFrame(5000, ""), CloseProtocol},
		{"length with top bit", msb, CloseProtocol},
		{"invalid utf-8 text", maskedFrame(true, 0, ws.OpText, []byte("{\"type\":\"\xff\"}")), CloseBadUTF8},
		{"invalid utf-8 across fragments", append(maskedFrame(false, 0, ws.OpText, []byte("\xe2\x82")), maskedFrame(true, 0, ws.OpContinuation, []byte("("))...), CloseBadUTF8},
		{"invalid utf-8 close reason", closeFrame(1000, "\xc3\x28"), CloseBadUTF8},
		{"header over the limit", over, CloseTooBig},
		{"header claiming 2^62 bytes", huge, CloseTooBig},
		{"fragments over the limit", append(maskedFrame(false, 0, ws.OpText, bytes.Repeat([]byte("a"), 600)), maskedFrame(true, 0, ws.OpContinuation, bytes.Repeat([]byte("a"), 600))...), CloseTooBig},
		{"binary message", maskedFrame(true, 0, ws.OpBinary, []byte{1, 2, 3}), CloseUnsupported},
		{"not json", maskedFrame(true, 0, ws.OpText, []byte("hello")), CloseBadMessage},
		{"json without type", maskedFrame(true, 0, ws.OpText, []byte(`{"id":"x"}`)), CloseBadMessage},
		{"ack without id", maskedFrame(true, 0, ws.OpText, []byte(`{"type":"ack"}`)), CloseBadMessage},
	}
	bothPollers(t, func(t *testing.T, portable bool) {
		e := startEdge(t, portable, func(c *Config) { c.MaxMessageBytes = 1024 })
		for _, tc := range cases {
			c := dialRaw(t, e, "alice", nil)
			c.expectText()
			c.write(tc.send)
			op, p := c.next()
			if op != ws.OpClose || len(p) < 2 {
				t.Fatalf("%s: got %v %q, want close %d", tc.name, op, p, tc.want)
			}
			if got := CloseCode(binary.BigEndian.Uint16(p)); got != tc.want {
				t.Fatalf("%s: close %d %q, want %d", tc.name, got, p[2:], tc.want)
			}
			// A protocol failure closes the TCP connection at once.
			c.expectEOF()
		}
		eventually(t, 5*time.Second, "all closed", func() bool { return e.srv.Connections() == 0 })
		if _, _, acks := e.rec.snapshot(); len(acks) != 0 {
			t.Fatalf("a bad frame was acted on: %v", acks)
		}
	})
}

func TestProtocolLargeMessageWithinLimit(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false, nil) // 64 KiB limit
	c := dialRaw(t, e, "alice", nil)
	c.expectText()
	ack := `{"type":"ack","id":"big","pad":"` + strings.Repeat("z", 60<<10) + `"}`
	c.write(maskedFrame(true, 0, ws.OpText, []byte(ack)))
	eventually(t, 5*time.Second, "big ack", func() bool {
		_, _, acks := e.rec.snapshot()
		return len(acks) == 1
	})
	conns := e.srv.registry.conns()
	if len(conns) != 1 {
		t.Fatal("connection lost")
	}
}

func TestFrameEncoding(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		data := json.RawMessage(`"` + strings.Repeat("d", n) + `"`)
		f := EncodeMessage("0123456789abcdefghjk", data, time.UnixMilli(1234), "")
		h, hn, err := parseHeader(f.Bytes())
		if err != nil || hn == 0 || !h.fin || h.op != ws.OpText || h.masked || int(h.length) != f.Len()-hn {
			t.Fatalf("n=%d: header %+v %d %v", n, h, hn, err)
		}
		var got frame
		if err := json.Unmarshal(f.Bytes()[hn:], &got); err != nil {
			t.Fatalf("n=%d: payload is not JSON: %v", n, err)
		}
		if got.Type != "message" || got.ID != "0123456789abcdefghjk" || string(got.Data) != string(data) || got.TS != 1234 {
			t.Fatalf("n=%d: %+v", n, got)
		}
	}
}

func TestIdleForIsWrapSafe(t *testing.T) {
	t.Parallel()
	cases := []struct{ now, last, want uint32 }{
		{1000, 400, 600},
		{1000, 1000, 0},
		{1000, 1005, 0},                 // a read stored after the tick read the clock
		{5, 0xffffff00, 5 + 0x100},      // the clock wrapped after 49 days
		{0xffffff00, 0xfffffe00, 0x100}, // just before the wrap
	}
	for _, c := range cases {
		if got := idleFor(c.now, c.last); got != c.want {
			t.Errorf("idleFor(%d, %d) = %d, want %d", c.now, c.last, got, c.want)
		}
	}
}
