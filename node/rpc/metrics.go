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
	resent   prometheus.Counter
	dropped  prometheus.Counter
	gaps     prometheus.Counter
	batch    prometheus.Histogram
	inFlight prometheus.Gauge
	queued   prometheus.Gauge
	streams  prometheus.Counter
	ackLate  prometheus.Counter
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	m := &clientMetrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_sent_total", Help: "Deliveries sent to push nodes.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_acked_total", Help: "Deliveries acked by push nodes.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_resent_total", Help: "Deliveries sent again on a new stream after a stream broke or an ack was late.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_deliveries_dropped_total", Help: "Deliveries dropped because their peer held too many (QueueLen, QueueBytes); the peer recovers them from the store.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_sessions_with_gap_total", Help: "Delivery sessions opened that report dropped deliveries (or a forgotten earlier session); each makes its receiver resync the users concerned.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_rpc_batch_deliveries", Help: "Deliveries per batch sent.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_rpc_deliveries_in_flight", Help: "Deliveries sent and not yet acked.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_rpc_deliveries_queued", Help: "Deliveries waiting in peer queues.",
		}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_streams_opened_total", Help: "Deliver streams opened (a rising rate means reconnects).",
		}),
		ackLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_ack_timeouts_total", Help: "Deliver streams cut because a batch was not acked within AckTimeout (the peer froze or the network stalled); their batches are sent again.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sent, m.acked, m.resent, m.dropped, m.gaps, m.batch, m.inFlight, m.queued, m.streams, m.ackLate} {
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
	duplicates prometheus.Counter
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
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_server_duplicates_total", Help: "Deliveries received again after a reconnect and dropped, having been handled.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rpc_server_refused_total", Help: "Calls refused for a missing or wrong cluster credential.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_rpc_server_streams", Help: "Open Deliver streams.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.batches, m.deliveries, m.duplicates, m.refused, m.streams} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rpc: register server metrics: %w", err)
			}
		}
	}
	return m, nil
}
