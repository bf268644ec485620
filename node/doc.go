// Package node composes Herald's roles into one process.
//
// A [Node] runs any set of the four roles on one public HTTP port:
//
//   - auth verifies connection tokens (node/auth);
//   - collect serves POST /v1/messages: it validates the request, stores
//     the message durably and only then answers 202, and hands it to
//     dispatch;
//   - dispatch delivers each stored message to the push side in the order
//     it was accepted, in batches;
//   - push runs the WebSocket edge (package edge) and keeps this node's
//     user bindings in the binding store (presence.go).
//
// Dependencies are typed: the node takes a storage.Messages, a
// storage.Bindings and an Authenticator in its Config and owns them from
// New on (Shutdown closes them). New starts nothing; Start starts the
// roles in dependency order; Drain makes the node not ready and sends its
// WebSocket clients elsewhere; Shutdown stops everything in reverse order
// and waits for every goroutine it started.
package node
