package gobwasepoll

import (
	"context"
	"sync"

	"github.com/heraldpush/herald/benchmarks/baselines"
)

// pool is gobwas/ws-examples' gopool: at most size goroutines, spawned on
// demand, sharing a task queue. Unlike gopool it can be stopped.
type pool struct {
	sem  chan struct{}
	work chan func()
	wg   sync.WaitGroup

	mu     sync.RWMutex // held for reading while scheduling
	closed bool
}

func newPool(size, queue int) *pool {
	return &pool{
		sem:  make(chan struct{}, size),
		work: make(chan func(), queue),
	}
}

// schedule runs task on a worker, blocking while all workers are busy and
// the queue is full. It returns false, without running task, once the pool
// is closed.
func (p *pool) schedule(task func()) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	select {
	case p.work <- task:
	case p.sem <- struct{}{}:
		p.wg.Add(1)
		go p.worker(task)
	}
	return true
}

func (p *pool) worker(task func()) {
	defer p.wg.Done()
	defer func() { <-p.sem }()
	task()
	for task := range p.work {
		task()
	}
}

// close refuses new tasks, lets the workers finish the queued ones and waits
// for them, or for ctx.
func (p *pool) close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.work)
	}
	p.mu.Unlock()
	return baselines.Wait(ctx, &p.wg)
}
