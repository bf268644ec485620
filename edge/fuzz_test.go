package edge

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/heraldpush/herald/storage"
)

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00})
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x01, 0x7e})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseHeader(b)
		if err != nil {
			return
		}
		if n == 0 {
			// Incomplete: every prefix is incomplete too.
			for i := range b {
				if _, m, err := parseHeader(b[:i]); m != 0 || err != nil {
					t.Fatalf("prefix %d parsed (%d, %v) while the whole is incomplete", i, m, err)
				}
			}
			return
		}
		if n > len(b) || n > maxHeaderLen || h.length < 0 {
			t.Fatalf("header length %d of %d bytes, payload %d", n, len(b), h.length)
		}
		// Re-encoding an unmasked final frame header yields the same length.
		if h.fin && !h.masked && h.rsv == 0 && h.length < 1<<20 {
			enc := appendFrameHeader(nil, h.op, int(h.length))
			h2, n2, _ := parseHeader(enc)
			if h2.length != h.length || h2.op != h.op || n2 != len(enc) {
				t.Fatalf("re-encoded header differs: %+v vs %+v", h2, h)
			}
		}
	})
}

func FuzzDecodeClientMessage(f *testing.F) {
	for _, s := range []string{`{"type":"ack","id":"x"}`, `{"type":"ping"}`, `{"type":"ack"}`, `[]`, `{"type":1}`, `nul`} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"type":"ack","id":"01m8aq8msv000025ptet"}`))
	f.Add([]byte(`{"type":"ack","id":"a\"b"}`))
	f.Add([]byte(`{"type":"resume","since":"01m8aq8msv000025ptet","seen":["01m8aq8msv000025ptez"]}`))
	f.Add([]byte(`{"type":"resume","seen":["nope"]}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeClientMessage(p)
		// The fast path agrees with encoding/json wherever it answers.
		if fast, ok := decodeAck(p); ok {
			var slow clientMessage
			if jerr := json.Unmarshal(p, &slow); jerr != nil || !reflect.DeepEqual(slow, fast) {
				t.Fatalf("fast ack %+v, encoding/json %+v %v for %q", fast, slow, jerr, p)
			}
		}
		if err != nil {
			return
		}
		if m.Type == "" || (m.Type == clientAck && m.ID == "") {
			t.Fatalf("accepted %q as %+v", p, m)
		}
		if m.Type == clientResume {
			for _, id := range append([]string{m.Since}, m.Seen...) {
				if _, err := storage.ParseID(id); id != "" && err != nil {
					t.Fatalf("accepted resume %q with a bad id %q", p, id)
				}
			}
		}
		if !json.Valid(p) {
			t.Fatalf("accepted invalid JSON %q", p)
		}
	})
}

// fuzzConn is a Conn on one end of a socketpair, with a Server that is not
// started: enough to run the read path for real.
type fuzzConn struct {
	c    *Conn
	peer int
	rec  *recorder
}

func newFuzzConn(t *testing.T) *fuzzConn {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	file := os.NewFile(uintptr(fds[0]), "fuzz")
	nc, err := net.FileConn(file) // dups the fd
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	cfg := DefaultConfig()
	cfg.Auth = testAuth{}
	cfg.Listener = rec
	cfg.MaxMessageBytes = 1024
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := socketFD(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{srv: srv, nc: nc, fd: fd, user: "fuzz", slot: -1}
	t.Cleanup(func() {
		c.teardown(nil)
		unix.Close(fds[1])
	})
	return &fuzzConn{c: c, peer: fds[1], rec: rec}
}

// run feeds input in chunks of size n (all at once if n <= 0) and returns
// what the server wrote back, the acks it saw and whether it closed.
func (fc *fuzzConn) run(input []byte, n int) (out []byte, acks []string, closing bool) {
	if n <= 0 {
		n = len(input)
	}
	for i := 0; i < len(input) && !fc.c.isClosed(); i += n {
		chunk := input[i:min(i+n, len(input))]
		fc.c.feed(slices.Clone(chunk), false)
		fc.c.mu.Lock()
		closing = fc.c.state != stateOpen
		fc.c.mu.Unlock()
		if closing {
			break
		}
		if rs := fc.c.rs; rs != nil && (len(rs.buf) > 1024+maxHeaderLen || len(rs.frag) > 1024) {
			panic("a connection buffered more than the limit")
		}
	}
	buf := make([]byte, 1<<16)
	for {
		k, err := unix.Read(fc.peer, buf)
		if k <= 0 || err != nil {
			break
		}
		out = append(out, buf[:k]...)
	}
	_, _, acks = fc.rec.snapshot()
	return out, acks, closing
}

func FuzzClientFrames(f *testing.F) {
	f.Add(maskedFrame(true, 0, ws.OpText, []byte(`{"type":"ack","id":"a"}`)), uint8(1))
	f.Add(append(maskedFrame(false, 0, ws.OpText, []byte(`{"type":`)), append(maskedFrame(true, 0, ws.OpPing, []byte("p")),
		maskedFrame(true, 0, ws.OpContinuation, []byte(`"ping"}`))...)...), uint8(3))
	f.Add(closeFrame(1000, "bye"), uint8(2))
	f.Add([]byte{0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, uint8(5))
	f.Add(rawFrame(true, 0, ws.OpText, []byte("x"), false), uint8(1))
	f.Fuzz(func(t *testing.T, input []byte, chunk uint8) {
		if len(input) > 1<<14 {
			return
		}
		whole := newFuzzConn(t)
		out1, acks1, closed1 := whole.run(input, 0)
		split := newFuzzConn(t)
		out2, acks2, closed2 := split.run(input, int(chunk%17)+1)
		// How bytes are split into reads must not change what happens.
		if closed1 != closed2 || !slices.Equal(acks1, acks2) || !bytes.Equal(out1, out2) {
			t.Fatalf("whole vs chunks of %d differ:\nclosed %v %v\nacks %v %v\nout %q\n    %q",
				int(chunk%17)+1, closed1, closed2, acks1, acks2, out1, out2)
		}
	})
}
