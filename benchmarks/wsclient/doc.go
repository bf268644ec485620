// Package wsclient is the load tool's WebSocket client side: many client
// connections in one process at little cost. A connection does its
// handshake in a bounded pool of goroutines, then joins an epoll loop: an
// idle connection holds no goroutine and no buffer. Every message frame
// is counted per connection by ID, and its end-to-end latency measured
// from a send timestamp the load tool puts in the message data ("t", Unix
// nanoseconds, on the same machine's clock).
//
// It is Linux-only (epoll), like the load tool.
package wsclient
