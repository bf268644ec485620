package rpc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// clientMetrics are summed over every peer: peer labels would be bounded
// by the cluster's size, but per-peer detail belongs in logs.
type clientMetrics struct {
	sent     prometheus.Counter
	acked    prometheus.Counter
	failed   prometheus.Counter
	batch    prometheus.Histogram
	inFlight prometheus.Gauge
	queued   prometheus.Gauge
	streams  prometheus.Counter
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	m := &clientMetrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_sent_total", Help: "Deliveries sent to push nodes.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_acked_total", Help: "Deliveries acked by push nodes.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_failed_total", Help: "Deliveries given up on (timeout, broken stream, refusal, queue ageing, removal); they wait in the store for replay.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_rpc_batch_deliveries", Help: "Deliveries per batch sent.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_rpc_deliveries_in_flight", Help: "Deliveries sent and not yet acked or failed.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_rpc_deliveries_queued", Help: "Deliveries waiting in peer queues.",
		}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_streams_opened_total", Help: "Deliver streams opened (a rising rate means reconnects).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sent, m.acked, m.failed, m.batch, m.inFlight, m.queued, m.streams} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rpc: register client metrics: %w", err)
			}
		}
	}
	return m, nil
}

type serverMetrics struct {
	batches    prometheus.Counter
	deliveries prometheus.Counter
	refused    prometheus.Counter
	streams    prometheus.Gauge
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_server_batches_total", Help: "Deliver batches received.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_server_deliveries_total", Help: "Deliveries received.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_server_refused_total", Help: "Calls refused for a missing or wrong cluster credential.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_rpc_server_streams", Help: "Open Deliver streams.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.batches, m.deliveries, m.refused, m.streams} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rpc: register server metrics: %w", err)
			}
		}
	}
	return m, nil
}
