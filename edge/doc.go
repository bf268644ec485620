// Package edge is Herald's WebSocket edge: it upgrades connections, keeps
// them open cheaply, and writes messages to them.
//
// # Holding connections
//
// A connection that is not doing anything costs a [Conn] struct, its socket,
// and its entries in the registry (user ID -> connections, sharded 64 ways)
// and the timing wheel: no goroutine and no buffer. On Linux one goroutine
// waits on an epoll instance with one-shot registrations and hands readable
// connections to a bounded pool of workers; when every worker is busy the
// poller waits, which holds back reading instead of queueing without bound.
// Workers read with non-blocking system calls into their own scratch
// buffer; a connection keeps bytes only while a frame is incomplete, in a
// buffer sized for that frame after its header was checked against
// MaxMessageBytes, so a header claiming 2^62 bytes costs nothing. On other
// Unix systems a portable poller parks one goroutine per connection in Go's
// network poller instead. Windows is not supported.
//
// # Writing
//
// Server frames are encoded once ([EncodeMessage]) and the same bytes are
// queued on every connection that should get them. Each connection has a
// write queue bounded in bytes (WriteQueueBytes); writes are non-blocking
// and a socket that would block is polled for writability. A client that
// lets its queue overflow is closed with [CloseSlowConsumer] and never slows
// anyone else down; what it missed stays in the store for replay.
//
// # Timers
//
// Pings, idle timeouts and token expiry run from one hashed timing wheel:
// each connection sits in one of PingInterval/Tick slots and one slot is
// visited per Tick, so there is no timer per connection.
//
// # Protocol
//
// The edge implements RFC 6455 itself on top of github.com/gobwas/ws's
// handshake and masking: pings are answered, fragmented messages are
// reassembled (control frames may arrive between fragments), the closing
// handshake is echoed, unmasked client frames and reserved bits and unknown
// opcodes close with 1002, invalid UTF-8 with 1007, and messages over the
// limit with 1009. No extension (such as permessage-deflate) is negotiated.
// The handshake is checked before the upgrade: header count (the server's
// MaxHeaderBytes and ReadHeaderTimeout bound size and time), the Origin
// allow-list, and the token, with JSON errors. The application protocol
// (JSON frames, acks, replay, close codes) is described in
// docs/PROTOCOL.md.
package edge
