package node

import (
	"context"
	"sync"
	"time"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/storage"
)

// dispatcher takes durable messages from collect and delivers them. One
// goroutine drains a bounded queue in batches: messages are delivered in
// the order they were accepted, and a batch shares its binding lookups.
type dispatcher struct {
	n    *Node
	in   chan *storage.Message
	stop chan struct{}
	wg   sync.WaitGroup
}

// maxDispatchBatch bounds the messages handled per batch.
const maxDispatchBatch = 256

func newDispatcher(n *Node) *dispatcher {
	return &dispatcher{n: n, in: make(chan *storage.Message, n.cfg.DispatchQueue), stop: make(chan struct{})}
}

func (d *dispatcher) start() {
	d.wg.Add(1)
	go d.run()
}

// submit queues a stored message, waiting for room while ctx lasts. A
// message that does not fit in time stays in the store for replay.
func (d *dispatcher) submit(ctx context.Context, m *storage.Message) {
	select {
	case d.in <- m:
		d.n.metrics.dispatchQueue.Inc()
		return
	default:
	}
	select {
	case d.in <- m:
		d.n.metrics.dispatchQueue.Inc()
	case <-ctx.Done():
		d.n.metrics.dispatchDropped.Inc()
		d.n.log.Warn("dispatch queue full; message left for replay", "id", m.ID)
	case <-d.stop:
		d.n.metrics.dispatchDropped.Inc()
	}
}

func (d *dispatcher) run() {
	defer d.wg.Done()
	batch := make([]*storage.Message, 0, maxDispatchBatch)
	for {
		select {
		case m := <-d.in:
			batch = append(batch[:0], m)
		case <-d.stop:
			return
		}
	more:
		for len(batch) < maxDispatchBatch {
			select {
			case m := <-d.in:
				batch = append(batch, m)
			default:
				break more
			}
		}
		d.n.metrics.dispatchQueue.Sub(float64(len(batch)))
		d.deliver(batch)
		clear(batch)
	}
}

// deliver hands a batch to the push side. On one node that is the local
// edge; users without a connection here get nothing now and replay later.
func (d *dispatcher) deliver(batch []*storage.Message) {
	e := d.n.edge
	for _, m := range batch {
		if e == nil {
			continue
		}
		f := edge.EncodeMessage(m.ID, m.Data, m.CreatedAt)
		var conns int
		if m.Broadcast {
			conns = e.Broadcast(f)
		} else {
			conns = e.Deliver(f, m.To...)
		}
		d.n.metrics.delivered.Add(float64(conns))
		d.n.metrics.dispatchLatency.Observe(time.Since(m.CreatedAt).Seconds())
	}
}

func (d *dispatcher) shutdown() {
	close(d.stop)
	d.wg.Wait()
}
