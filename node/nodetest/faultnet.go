package nodetest

import (
	"context"
	"errors"
	"net"
	"sync"
)

// FaultNet injects network faults into the connections a node dials
// (set Dial as the node's rpc.ClientConfig.Dialer): Block(addr) makes new
// dials to addr fail and stalls the connections already open to it, in
// both directions, as a network that drops every packet (or a peer that
// froze) would; Unblock lets everything through again, the stalled bytes
// included.
type FaultNet struct {
	mu      sync.Mutex
	blocked map[string]chan struct{} // addr -> closed on Unblock
}

// NewFaultNet returns a FaultNet that blocks nothing.
func NewFaultNet() *FaultNet { return &FaultNet{blocked: make(map[string]chan struct{})} }

// Block stalls traffic to addr.
func (f *FaultNet) Block(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.blocked[addr]; !ok {
		f.blocked[addr] = make(chan struct{})
	}
}

// Unblock lets traffic to addr through again.
func (f *FaultNet) Unblock(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.blocked[addr]; ok {
		close(ch)
		delete(f.blocked, addr)
	}
}

// gate returns a channel that is closed once addr is not blocked.
func (f *FaultNet) gate(addr string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.blocked[addr]; ok {
		return ch
	}
	return nil
}

var errBlocked = errors.New("faultnet: destination blocked")

// Dial dials addr unless it is blocked.
func (f *FaultNet) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if f.gate(addr) != nil {
		return nil, errBlocked
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &faultConn{Conn: c, f: f, addr: addr, closed: make(chan struct{})}, nil
}

type faultConn struct {
	net.Conn
	f      *FaultNet
	addr   string
	once   sync.Once
	closed chan struct{}
}

// wait holds the caller while the destination is blocked.
func (c *faultConn) wait() error {
	for {
		g := c.f.gate(c.addr)
		if g == nil {
			return nil
		}
		select {
		case <-g:
		case <-c.closed:
			return net.ErrClosed
		}
	}
}

func (c *faultConn) Read(p []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if werr := c.wait(); werr != nil { // what arrived while blocked waits too
		return 0, werr
	}
	return n, err
}

func (c *faultConn) Write(p []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
