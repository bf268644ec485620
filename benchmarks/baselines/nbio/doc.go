// Package nbio is the github.com/lesismal/nbio baseline in nbio's
// recommended non-blocking setup for many connections: an nbhttp.Engine in
// IOModNonBlocking (the default) serves HTTP from a few epoll goroutines and
// hands requests to its task pool, and nbhttp/websocket's Upgrader turns
// /ws requests into connections that stay in the poller, with no goroutine
// per connection (lesismal/nbio-examples websocket/server, and
// go-websocket-benchmark's nbio_nonblocking server).
//
// Writes are non-blocking: WriteMessage writes what the socket accepts and
// nbio buffers the rest until the poller reports the socket writable. A
// connection with more than 1 MiB buffered (Herald's --write-queue-bytes) is
// closed by nbio, so a slow connection never blocks the others. nbio has no
// API to write a pre-encoded frame, so each connection's WriteMessage builds
// its own frame: a 2 to 10 byte header and a copy of the payload.
//
// The Upgrader's KeepaliveTime is 0: by default nbio would close a
// connection that sends nothing for 120 s, and the contract keeps idle
// connections open.
//
// nbio logs to stdout at Info by default through its global logging package;
// programs that use this package should set logging.Output and the level
// before Start, as cmd/baseline does.
package nbio
