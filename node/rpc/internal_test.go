package rpc

import (
	"math"
	"testing"
	"time"

	"github.com/heraldpush/herald/node/rpc/rpcpb"
	"github.com/heraldpush/herald/storage"
)

func TestConvertEdges(t *testing.T) {
	var pm rpcpb.Message
	fillProto(&pm, &storage.Message{ID: "x", Broadcast: true})
	if pm.CreatedMs != 0 || pm.ExpiresMs != 0 {
		t.Fatalf("zero times encoded as %d, %d", pm.CreatedMs, pm.ExpiresMs)
	}
	var m storage.Message
	fillMessage(&m, &pm)
	if !m.CreatedAt.IsZero() || !m.ExpiresAt.IsZero() || m.Data != nil || m.To != nil {
		t.Fatalf("decoded %+v", m)
	}
	ts := time.Date(2030, 1, 2, 3, 4, 5, 678_900_000, time.UTC)
	fillProto(&pm, &storage.Message{CreatedAt: ts})
	fillMessage(&m, &pm)
	if !m.CreatedAt.Equal(ts.Truncate(time.Millisecond)) {
		t.Fatalf("time %v came back as %v", ts, m.CreatedAt)
	}
	for h, want := range map[int]uint32{-1: 0, 0: 0, 1: 1, math.MaxInt: math.MaxUint32} {
		if got := clampHops(h); got != want {
			t.Fatalf("clampHops(%d) = %d", h, got)
		}
	}
	ds := deliveriesFromProto([]*rpcpb.Delivery{{Hops: 2}})
	if ds[0].Message == nil || ds[0].Hops != 2 {
		t.Fatalf("delivery without a message decoded as %+v", ds[0])
	}
}

func TestBufferPool(t *testing.T) {
	p := newBufferPool()
	for _, size := range []int{0, 1, 256, 257, 4096, 40 << 10, 1 << 20, 16 << 20, 16<<20 + 1} {
		b := p.Get(size)
		if len(*b) != size {
			t.Fatalf("Get(%d) has length %d", size, len(*b))
		}
		if c := cap(*b); size <= 1<<maxTier && (c < size || c > max(2*size, 1<<minTier)) {
			t.Fatalf("Get(%d) has capacity %d", size, c)
		}
		p.Put(b)
		b2 := p.Get(size)
		if len(*b2) != size {
			t.Fatalf("second Get(%d) has length %d", size, len(*b2))
		}
	}
	odd := make([]byte, 300)
	p.Put(&odd) // not a tier size: dropped, not pooled
}
