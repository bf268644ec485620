package gossip

import (
	"fmt"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. memberlist calls them from its
// own goroutines, some with its node lock held: they copy what they need,
// take only the roster's lock, never block and never call into memberlist.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
)

// NodeMeta returns this node's encoded Meta; its size was checked when it
// was set.
func (d *delegate) NodeMeta(limit int) []byte {
	enc := d.g.meta.Load().enc
	if len(enc) > limit {
		return nil
	}
	return enc
}

// Herald sends no user messages or state over gossip.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyAlive admits only nodes whose Meta decodes and matches their
// memberlist name, so every member the cluster sees has a usable Meta.
// memberlist ignores the rejected node's alive message (and logs it).
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	m, err := DecodeMeta(n.Meta)
	if err != nil {
		d.g.metrics.rejected.Inc()
		return err
	}
	if m.NodeName() != n.Name {
		d.g.metrics.rejected.Inc()
		return fmt.Errorf("%w: node %q advertises the name %q", ErrInvalidMeta, n.Name, m.NodeName())
	}
	return nil
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.notify(Join, n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.notify(Leave, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.notify(Update, n) }

func (d *delegate) notify(t EventType, n *memberlist.Node) {
	if d.g.State() == StateShutdown {
		return // memberlist's goroutines may still be winding down
	}
	d.g.metrics.events.WithLabelValues(t.String()).Inc()
	m, err := DecodeMeta(n.Meta) // copies: n belongs to memberlist
	if err != nil && t != Leave {
		return // unreachable: NotifyAlive admitted the node
	}
	count, merged, ok := d.g.roster.apply(n.Name, Event{Type: t, Member: Member{Meta: m, Addr: n.Address()}}, err == nil)
	if !ok {
		return
	}
	d.g.metrics.members.Set(float64(count))
	if merged {
		d.g.metrics.coalesced.Inc()
	}
}
