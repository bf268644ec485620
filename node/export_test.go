package node

import "github.com/heraldpush/herald/gossip"

// GossipMember returns what this node's membership knows of node id.
func (n *Node) GossipMember(id string) (gossip.Member, bool) { return n.cluster.member(id) }

// ApplyGossip feeds ev to this node's membership as if gossip had
// delivered it: tests use it to stage a false death.
func (n *Node) ApplyGossip(ev gossip.Event) { n.cluster.apply(ev) }

// SourceInfo describes a source of this node's cursor.
type SourceInfo = sourceInfo

// Sources lists the dispatch nodes this push node follows the cursor of.
func (n *Node) Sources() []SourceInfo { return n.sources.list() }

// Cursor is this node's cursor.
func (n *Node) Cursor() string { return n.sources.Cursor() }
