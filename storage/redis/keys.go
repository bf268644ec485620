package redis

import (
	"strings"

	"github.com/heraldpush/herald/storage"
)

// keys builds the key names of the data model described in the package
// documentation. Every key carries a Cluster hash tag ({user} or {node ID})
// and every command or script touches exactly one key.
type keys struct{ prefix string }

// binding is the hash of user's bindings: field node ID, value incarnation.
// The key is unique per user whatever the user ID contains; a '}' inside it
// only shortens the hash tag, which nothing relies on.
func (k keys) binding(user string) string {
	return k.prefix + "b:{" + user + "}"
}

// lease is the lease string of node ID id; its value is the incarnation.
func (k keys) lease(id string) string {
	return k.prefix + "lease:{" + escapeTag(id) + "}"
}

// nodeSet is the set of users that incarnation n bound.
func (k keys) nodeSet(n storage.Node) string {
	return k.prefix + "n:{" + escapeTag(n.ID) + "}:" + n.Incarnation
}

// tagEscaper makes a node ID safe inside a hash tag: without '{' or '}' the
// tag ends where the ID ends, so (ID, incarnation) pairs map to distinct
// keys, and the lease and user set of one node share a slot.
var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

func escapeTag(s string) string {
	if !strings.ContainsAny(s, "%{}") {
		return s
	}
	return tagEscaper.Replace(s)
}
