package rpc

import (
	"encoding/json"
	"math"
	"time"

	"github.com/heraldpush/herald/node/rpc/rpcpb"
	"github.com/heraldpush/herald/storage"
)

// Delivery is one message for a push node's local connections.
type Delivery struct {
	// Message is the stored message. Its To lists the recipients for this
	// hop (the users the receiving node is believed to hold), not
	// necessarily all of the message's; Broadcast means every local
	// connection. Nothing here modifies it, and the sender shares it with
	// the caller until the delivery is acked or failed.
	Message *storage.Message
	// Hops counts the push nodes that already forwarded the delivery: a
	// push node that finds none of the recipients forwards a delivery with
	// Hops 0 once, with Hops 1, and never forwards one with Hops >= 1.
	Hops int
}

// What crosses the wire, and what comes back:
//   - Data, ID, Key, Broadcast and the recipients verbatim; an empty To
//     arrives as nil (protobuf does not tell them apart), and so does an
//     empty Data;
//   - CreatedAt and ExpiresAt to the millisecond (IDs have millisecond
//     precision too), in the receiver's local time zone; a zero time stays
//     zero;
//   - Hops, clamped to [0, MaxUint32].

func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// fillProto writes m into pm, sharing its slices.
func fillProto(pm *rpcpb.Message, m *storage.Message) {
	pm.Id = m.ID
	pm.Data = m.Data
	pm.CreatedMs = toMillis(m.CreatedAt)
	pm.ExpiresMs = toMillis(m.ExpiresAt)
	pm.To = m.To
	pm.Broadcast = m.Broadcast
	pm.Key = m.Key
}

// fillMessage writes pm into m, taking its slices (a decoded message owns
// them).
func fillMessage(m *storage.Message, pm *rpcpb.Message) {
	m.ID = pm.GetId()
	if d := pm.GetData(); len(d) > 0 {
		m.Data = json.RawMessage(d)
	}
	m.CreatedAt = fromMillis(pm.GetCreatedMs())
	m.ExpiresAt = fromMillis(pm.GetExpiresMs())
	if to := pm.GetTo(); len(to) > 0 {
		m.To = to
	}
	m.Broadcast = pm.GetBroadcast()
	m.Key = pm.GetKey()
}

// deliveriesToProto converts ds with three allocations whatever len(ds).
func deliveriesToProto(ds []Delivery) []*rpcpb.Delivery {
	pds := make([]rpcpb.Delivery, len(ds))
	pms := make([]rpcpb.Message, len(ds))
	out := make([]*rpcpb.Delivery, len(ds))
	for i, d := range ds {
		fillProto(&pms[i], d.Message)
		pds[i].Message = &pms[i]
		pds[i].Hops = clampHops(d.Hops)
		out[i] = &pds[i]
	}
	return out
}

// deliveriesFromProto converts pds with two allocations whatever len(pds).
// A delivery without a message gets an empty one.
func deliveriesFromProto(pds []*rpcpb.Delivery) []Delivery {
	ms := make([]storage.Message, len(pds))
	out := make([]Delivery, len(pds))
	for i, pd := range pds {
		fillMessage(&ms[i], pd.GetMessage())
		out[i] = Delivery{Message: &ms[i], Hops: int(pd.GetHops())}
	}
	return out
}

func messagesToProto(ms []*storage.Message) []*rpcpb.Message {
	pms := make([]rpcpb.Message, len(ms))
	out := make([]*rpcpb.Message, len(ms))
	for i, m := range ms {
		fillProto(&pms[i], m)
		out[i] = &pms[i]
	}
	return out
}

func messagesFromProto(pms []*rpcpb.Message) []*storage.Message {
	ms := make([]storage.Message, len(pms))
	out := make([]*storage.Message, len(pms))
	for i, pm := range pms {
		fillMessage(&ms[i], pm)
		out[i] = &ms[i]
	}
	return out
}

func clampHops(h int) uint32 {
	switch {
	case h < 0:
		return 0
	case uint64(h) > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(h)
}

// sizeOf estimates d's encoded size, for BatchMaxBytes.
func sizeOf(d Delivery) int {
	m := d.Message
	n := 32 + len(m.ID) + len(m.Data) + len(m.Key)
	for _, u := range m.To {
		n += len(u) + 3
	}
	return n
}
