package edge

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the edge's Prometheus collectors. Labels have a fixed, small
// set of values; user IDs never appear in them.
type metrics struct {
	connections   prometheus.Gauge
	handshakes    *prometheus.CounterVec
	closes        *prometheus.CounterVec
	framesIn      prometheus.Counter
	bytesIn       prometheus.Counter
	bytesOut      prometheus.Counter
	delivered     prometheus.Counter
	acks          prometheus.Counter
	slowConsumers prometheus.Counter
	replayed      prometheus.Counter
	broadcast     prometheus.Histogram
	replayQueued  prometheus.Gauge
	replayRunning prometheus.Gauge
	replayLimit   prometheus.Gauge
	resyncs       prometheus.Counter
	noCursor      prometheus.Counter
	replayRetries prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_edge_connections", Help: "Open WebSocket connections.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_edge_handshakes_total", Help: "WebSocket handshakes by result.",
		}, []string{"result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_edge_closes_total", Help: "Connections closed by the server, by reason.",
		}, []string{"reason"}),
		framesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_frames_received_total", Help: "Frames received from clients.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_received_bytes_total", Help: "Bytes received from clients.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_sent_bytes_total", Help: "Bytes written to clients.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_deliveries_total", Help: "Message frames queued to connections (live and replayed).",
		}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_acks_total", Help: "Acks received from clients.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_slow_consumers_total", Help: "Connections closed because their write queue overflowed.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_replayed_total", Help: "Messages sent by since= replays.",
		}),
		replayQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_edge_replays_queued", Help: "Connections whose replay waits for a replay worker (ReplayWorkers).",
		}),
		replayRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_edge_replays_running", Help: "Replay pages being read from the store.",
		}),
		replayLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_edge_replay_concurrency",
			Help: "Replay pages allowed to be read at once: ReplayWorkers, halved each time the store fails a page, back up by one per page read.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_resyncs_total", Help: "Connections asked to resync (resume in place).",
		}),
		replayRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_replay_retries_total", Help: "Replay pages read again after the store failed them (down or too busy), within ReplayRetryFor.",
		}),
		noCursor: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_edge_ready_without_cursor_total", Help: "Ready frames whose cursor is the connect time because the node had none yet.",
		}),
		broadcast: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_edge_broadcast_seconds", Help: "Time to queue one broadcast frame on every connection.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connections, m.handshakes, m.closes, m.framesIn, m.bytesIn,
			m.bytesOut, m.delivered, m.acks, m.slowConsumers, m.replayed, m.broadcast, m.replayQueued, m.replayRunning, m.replayLimit,
			m.resyncs, m.noCursor, m.replayRetries} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register edge metrics: %w", err)
			}
		}
	}
	return m, nil
}
