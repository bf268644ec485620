// Package gorilla is the github.com/gorilla/websocket baseline, modelled on
// gorilla's chat example (examples/chat in the module): every connection has a
// reader goroutine (readPump) and a writer goroutine (writePump) that owns all
// data writes, fed by a buffered channel of 256 messages. A client whose
// channel is full is dropped instead of blocking the broadcaster, and every
// write has a 10 s deadline, as in the example. Broadcasts use
// websocket.PreparedMessage, so the frame is encoded once. Buffers are the
// documented defaults: with ReadBufferSize and WriteBufferSize zero the
// Upgrader reuses net/http's 4096-byte buffers.
//
// Unlike the chat example there are no server pings and no read deadline:
// the contract keeps idle connections open and Herald's load tool measures
// idle memory.
package gorilla
