package rpc

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// codec is gRPC's protobuf codec with its own buffer pool (one per Server
// or Client). gRPC's default codec takes its buffers from a process-wide
// pool whose tiers jump from 32 KiB to 1 MiB and which zeroes a buffer's
// whole capacity on every Get: a 40 KiB Deliver batch cost a 1 MiB memclr
// on each side, a fifth of the delivery path's CPU. This pool has
// power-of-two tiers and does not zero: every byte handed out is
// overwritten (by the marshaller, or by the copy of a received message)
// before it is read.
type codec struct{ pool *bufferPool }

func newCodec() codec { return codec{pool: newBufferPool()} }

// Name is the standard one: the wire format is plain protobuf.
func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("rpc codec: cannot marshal %T", v)
	}
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true} // Size just cached it
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	out, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil || len(out) != size {
		c.pool.Put(buf)
		if err == nil {
			err = fmt.Errorf("rpc codec: marshalled %d bytes, sized %d", len(out), size)
		}
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rpc codec: cannot unmarshal into %T", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	// proto.Unmarshal copies what it keeps, so the buffer can go back.
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Pool tiers: 2^minTier (256 B) to 2^maxTier (16 MiB) bytes. Larger
// buffers are allocated and dropped.
const (
	minTier = 8
	maxTier = 24
)

// bufferPool is a mem.BufferPool of power-of-two sized buffers that are
// not zeroed.
type bufferPool struct {
	tiers [maxTier - minTier + 1]sync.Pool
}

func newBufferPool() *bufferPool { return &bufferPool{} }

func tierOf(size int) int {
	if size <= 1<<minTier {
		return 0
	}
	return bits.Len(uint(size-1)) - minTier
}

func (p *bufferPool) Get(size int) *[]byte {
	t := tierOf(size)
	if t >= len(p.tiers) {
		b := make([]byte, size)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<(t+minTier))
	return &b
}

func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTier || c&(c-1) != 0 {
		return // not one of ours
	}
	if t := tierOf(c); t < len(p.tiers) {
		p.tiers[t].Put(b)
	}
}
