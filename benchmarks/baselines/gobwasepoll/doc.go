// Package gobwasepoll is the github.com/gobwas/ws baseline, modelled on
// gobwas/ws-examples' chat server (src/chat): after the zero-copy upgrade a
// connection has no goroutine of its own. An epoll loop on
// golang.org/x/sys/unix watches every connection for readability; the loop
// does not read, it schedules a read of one frame on a small worker pool
// (the example's gopool: up to 128 goroutines, a queue of 1, spawned on
// demand). Broadcasts encode the frame once and schedule one raw write per
// connection on the same pool, one broadcast at a time like the example's
// single writer goroutine, and return when every write has finished. Every
// read and write has an I/O timeout, like the example's; a connection whose
// write times out is closed, so a slow connection holds one worker, and
// delays the broadcast that finds it, for at most that timeout (10 s, not the
// example's 100 ms: see ioTimeout).
//
// Differences from the example, each for correctness: the upgrade goes
// through net/http (ws.UpgradeHTTP) because /broadcast and /stats share the
// port; epoll is level-triggered with EPOLLONESHOT, re-armed after each frame,
// so exactly one worker reads a connection at a time and no frame is left
// unread; each registration carries a generation number so an event for a
// closed descriptor can never reach a new connection that reuses it; control
// replies (pong, close) are written under the same per-connection write lock
// as broadcasts; and the example's easygo/netpoll is replaced by x/sys/unix.
//
// Linux only: on other systems New returns an error.
package gobwasepoll
