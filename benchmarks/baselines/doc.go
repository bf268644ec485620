// Package baselines holds what the four reference WebSocket servers share: the
// HTTP contract the Herald load tool drives (GET /ws, POST /broadcast,
// GET /stats), the connection registry, and the net/http server wrapper.
//
// Each library lives in its own package (gorilla, gobwasepoll, gws, nbio) and
// implements [Hub]. They are comparison baselines, not products: each one is
// written the way its library's own documentation recommends for many
// connections, and does nothing the contract does not ask for.
//
// This is a separate Go module so that Herald's go.mod never names these
// libraries.
package baselines
