// Package rpc carries Herald's node-to-node calls over persistent gRPC
// connections on each node's internal RPC port (never the public one):
//
//   - Deliver, dispatch node -> push node: a bidirectional stream of
//     batches of deliveries ([Delivery]: a stored message, the recipients
//     for this hop, and a hop count), each acked in order. This is the
//     throughput path.
//   - Submit, collect-only node -> dispatch node: stored messages to route
//     (unary).
//   - Verify, push node without the auth role -> auth node: token ->
//     identity (unary).
//
// The protocol is rpcpb/node.proto (package herald.rpc.v1). A [Server]
// serves it for a [Handler] that the node implements; a [Client] holds one
// [Peer] per remote address.
//
// # Security
//
// Every call carries the cluster credential, the metadata
// "authorization: Herald <hex HMAC-SHA256(secret, "herald-rpc-v1")>", and
// the server's interceptors compare it in constant time, refusing anything
// else with UNAUTHENTICATED (ErrUnauthenticated on the calling side). With
// ServerConfig.TLS and ClientConfig.TLS set the connections use TLS
// (mutual TLS if the configs ask for client certificates). Without TLS
// everything, the credential included, crosses the internal network in the
// clear: the internal port must only be reachable from the cluster's
// private network, never exposed.
//
// # Delivering
//
// [Peer.Enqueue] puts a delivery on the peer's bounded FIFO queue
// (QueueLen). One sender goroutine per peer takes deliveries from it into
// batches of up to BatchMax deliveries (and about BatchMaxBytes), waiting
// at most BatchDelay for a batch to fill, and sends them on one Deliver
// stream, numbered 1, 2, 3, ... At most Window batches are unacked at a
// time; while the window is full the sender takes nothing more, the queue
// fills, and Enqueue waits for room (ErrBusy when its context ends first).
// So a peer never holds more than QueueLen + Window*BatchMax deliveries,
// and the order of deliveries to one peer is kept end to end: the server
// hands batches to Handler.Deliver one at a time, in order.
//
// Failure is reported, never retried: the messages are durable in the
// store, and a client that missed one replays it on reconnect. Each
// delivery Enqueue accepted is eventually either acked or passed to
// ClientConfig.OnFailed, exactly once, in enqueue order:
//
//   - a batch not acked within AckTimeout: the stream is cut and every
//     unacked batch fails with ErrAckTimeout (the watchdog cuts even a
//     Send blocked on flow control);
//   - a stream that breaks (peer restart, network, Shutdown of the peer's
//     server): every unacked batch fails with ErrUnavailable (or
//     ErrUnauthenticated);
//   - a batch the peer's handler refused: that batch fails with
//     ErrRejected, and the stream goes on;
//   - while the peer cannot be reached the sender retries with jittered
//     exponential backoff (from 100 ms up to MaxBackoff), and deliveries
//     that have waited longer than QueueTimeout are failed with
//     ErrUnavailable, so a dead peer neither holds memory nor blocks
//     Enqueue for long;
//   - [Client.Remove] and [Client.Close] fail everything left with
//     ErrClosed.
//
// A failed delivery may still have been delivered (its ack may be what was
// lost): delivery is at least once, and clients dedupe by message ID.
// [Peer.Flush] waits until everything enqueued before it is acked or
// failed, for a node that drains.
//
// # Unary calls
//
// [Peer.Submit] and [Peer.Verify] honour their context's deadline (set
// one). An unreachable peer or a passed deadline gives ErrUnavailable.
// Verify maps the auth node's errors back: an invalid token is an error
// wrapping auth.ErrInvalidToken with the auth node's client-safe text;
// anything else wraps auth.ErrUnavailable.
//
// # What the node does
//
//   - Run one Server (with the push, dispatch or auth role) and one Client.
//   - Use Client.Peer(addr) per push node, from gossip metadata, and call
//     Client.Remove(addr) when the member leaves or is declared dead (its
//     address may come back as a new member: Peer makes a new peer).
//   - Treat OnFailed as accounting: count, log at a low level, or
//     re-resolve the users whose live delivery failed; never block in it
//     and never call Remove or Close from it. It must not re-enqueue to
//     the same peer synchronously either, as that could wait for room that
//     only the calling goroutine can make.
//   - When draining: stop enqueuing, Client.Flush (every peer) with a
//     deadline, then Close; Server.Shutdown ends incoming streams after their current
//     batch.
//
// # Metrics
//
// With a Registerer, the client registers herald_rpc_deliveries_sent_total,
// _acked_total, _failed_total, _in_flight, _queued,
// herald_rpc_batch_deliveries and herald_rpc_streams_opened_total; the
// server herald_rpc_server_batches_total, _deliveries_total,
// _refused_total and herald_rpc_server_streams. None has labels.
package rpc
