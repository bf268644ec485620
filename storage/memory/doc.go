// Package memory holds the embedded in-memory storage.Bindings, the default
// when Herald runs as one process without Redis. It implements the whole
// contract, leases and incarnations included, so a single node behaves as a
// cluster node does; its bindings vanish with the process, which is right
// for bindings of connections that vanish with it too.
package memory
