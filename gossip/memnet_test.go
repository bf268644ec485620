package gossip

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// memNet is an in-memory network for memberlist transports. It replaces
// memberlist.MockNetwork, which cannot simulate a crash or a late start:
// its sends block forever on a peer that stopped reading (so the senders'
// goroutines leak and their memberlists never stop), and adding a
// transport while others run races on its maps. Here packets are dropped
// like UDP when the peer is down, partitioned or slow, and dials to a down
// or partitioned peer are refused.
type memNet struct {
	mu     sync.Mutex
	next   int
	byAddr map[string]*memTransport
	cut    map[[2]string]bool // from, to: dropped
}

func newMemNet() *memNet {
	return &memNet{byAddr: make(map[string]*memTransport), cut: make(map[[2]string]bool)}
}

// reserve returns an address nothing listens on yet.
func (n *memNet) reserve() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	return "127.0.0.1:" + strconv.Itoa(20000+n.next)
}

// transport returns a transport listening at addr (a new address if addr
// is empty), replacing one that was shut down there.
func (n *memNet) transport(addr string) *memTransport {
	if addr == "" {
		addr = n.reserve()
	}
	t := &memTransport{
		net:     n,
		addr:    addr,
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.byAddr[addr]; old != nil && !old.isDown() {
		panic("memnet: address in use: " + addr)
	}
	n.byAddr[addr] = t
	return t
}

// partition drops all traffic between the groups of addresses.
func (n *memNet) partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]string{x, y}] = true
			n.cut[[2]string{y, x}] = true
		}
	}
}

// heal removes every partition.
func (n *memNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// peer returns the live transport at to, as reachable from from.
func (n *memNet) peer(from, to string) (*memTransport, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.byAddr[to]
	if !ok || t.isDown() || n.cut[[2]string{from, to}] {
		return nil, false
	}
	return t, true
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type memTransport struct {
	net     *memNet
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*memTransport)(nil)

func (t *memTransport) isDown() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, 0, err
	}
	p, err := strconv.Atoi(port)
	return net.ParseIP(host), p, err
}

func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *memTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if t.isDown() {
		return now, errors.New("memnet: transport shut down")
	}
	dest, ok := t.net.peer(t.addr, a.Addr)
	if !ok {
		return now, nil // lost, as UDP would lose it
	}
	p := &memberlist.Packet{Buf: slices.Clone(b), From: memAddr(t.addr), Timestamp: now}
	select {
	case dest.packets <- p:
	default: // receiver overloaded: lost
	}
	return now, nil
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *memTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dest, ok := t.net.peer(t.addr, a.Addr)
	if !ok || t.isDown() {
		return nil, fmt.Errorf("memnet: dial %s: connection refused", a.Addr)
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streams <- remote:
		return local, nil
	case <-dest.done:
	case <-t.done:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("memnet: dial %s: connection refused", a.Addr)
}

func (t *memTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *memTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	return nil
}
