// Package gws is the github.com/lxzan/gws baseline, set up as gws's README
// ("Best Practice") and its examples/push server show: a gws.Upgrader on a
// net/http server, and one goroutine per connection running socket.ReadLoop,
// which calls the event handler. Writes go through gws's per-connection async
// write queue; broadcasts use gws.NewBroadcaster, which encodes the frame once
// and queues it on every connection, so a slow connection never blocks the
// broadcaster. Each broadcast sets a 10 s write deadline on every connection
// (the README's SetDeadline advice), after which gws closes a connection that
// could not take the frame.
//
// Compression is off (the README's example turns it on; Herald negotiates no
// extension), and there is no read deadline, because the contract keeps idle
// connections open.
package gws
