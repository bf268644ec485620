package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/storage"
)

func BenchmarkEncodeMessage(b *testing.B) {
	data := json.RawMessage(`{"title":"Your order shipped","order":12345,"eta":"2026-12-01"}`)
	id, at := storage.NewIDGenerator(nil).Next()
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeMessage(id, data, at, "")
	}
}

// benchClients opens n raw WebSocket connections to e and drains them
// (one goroutine per client: the client side is not what is measured).
func benchClients(b *testing.B, e *testEdge, n int, users func(i int) string) {
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait) // runs after the connections close (cleanups run last-in first-out)
	for i := range n {
		c := dialRaw(b, e, users(i), nil)
		c.nc.SetReadDeadline(time.Time{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(io.Discard, c.nc)
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.srv.Connections() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connected", e.srv.Connections(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkBroadcast_5kConns measures one broadcast frame queued and
// written to 5,000 open connections (encoded once).
func BenchmarkBroadcast_5kConns(b *testing.B) {
	const n = 5000
	e := benchEdgeB(b)
	benchClients(b, e, n, func(i int) string { return fmt.Sprint("u", i) })
	data := json.RawMessage(`{"title":"System maintenance at 22:00"}`)
	ids := storage.NewIDGenerator(nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		id, at := ids.Next()
		if got := e.srv.Broadcast(EncodeMessage(id, data, at, "")); got != n {
			b.Fatalf("broadcast reached %d of %d", got, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/conn")
}

// BenchmarkDeliver_1kUsers measures unicast: one frame each to 1,000
// users with one connection each, like a dispatch batch.
func BenchmarkDeliver_1kUsers(b *testing.B) {
	const n = 1000
	e := benchEdgeB(b)
	benchClients(b, e, n, func(i int) string { return fmt.Sprint("u", i) })
	data := json.RawMessage(`{"title":"hello"}`)
	ids := storage.NewIDGenerator(nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range n {
			id, at := ids.Next()
			e.srv.Deliver(EncodeMessage(id, data, at, ""), fmt.Sprint("u", i))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/message")
}

func benchEdgeB(b *testing.B) *testEdge {
	return startEdge(b, false, func(c *Config) { c.Workers = 2 })
}
