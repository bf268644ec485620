package node

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's own collectors (the edge registers its own).
type metrics struct {
	posts *prometheus.CounterVec
	// The posts counters by result, resolved once: label lookups hash on
	// every call, and POSTs are the hot path.
	postAccepted, postDuplicate, postRejected, postUnauthorized, postUnavailable prometheus.Counter
	appendSeconds                                                                prometheus.Histogram
	dispatchQueue                                                                prometheus.Gauge
	dispatchDropped                                                              prometheus.Counter
	dispatchLatency                                                              prometheus.Histogram
	delivered                                                                    prometheus.Counter
	swept                                                                        prometheus.Counter
	bindErrors                                                                   prometheus.Counter
	lookupErrors                                                                 prometheus.Counter
	ringRouted                                                                   prometheus.Counter
	forwarded                                                                    prometheus.Counter
	forwardFailed                                                                prometheus.Counter
	misrouted                                                                    prometheus.Counter
	deferred                                                                     prometheus.Counter
	departRefuted                                                                prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_api_messages_total", Help: "POST /v1/messages by result.",
		}, []string{"result"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_store_append_seconds", Help: "Time to store one accepted message durably.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}),
		dispatchQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dispatch_queue", Help: "Stored messages waiting for dispatch.",
		}),
		dispatchDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_skipped_total", Help: "Stored messages not dispatched live because the queue stayed full (they wait for replay).",
		}),
		dispatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_dispatch_latency_seconds", Help: "From acceptance to queueing on the connections.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_deliveries_total", Help: "Message frames queued to local connections by dispatch.",
		}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_store_expired_deleted_total", Help: "Expired messages deleted by the sweeper.",
		}),
		bindErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_binding_errors_total", Help: "Failed writes to the binding store (retried).",
		}),
		lookupErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_lookup_errors_total", Help: "Binding lookups that failed (dispatch then routes by ring).",
		}),
		ringRouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_ring_routed_total", Help: "Recipients sent to their ring owner for want of a binding (none found, or the binding store failed).",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_forwarded_total", Help: "Deliveries queued for other push nodes.",
		}),
		forwardFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_forward_failed_total", Help: "Deliveries to other nodes skipped or not acked (the messages wait for replay).",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_deferred_total", Help: "Deliveries held for a node the binding store named before gossip did.",
		}),
		misrouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_push_misrouted_total", Help: "Recipients of a delivery that had no connection here and were looked up again.",
		}),
		departRefuted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cluster_departures_refuted_total", Help: "Nodes that left gossip or were declared dead and came back within DepartGrace (kept their bindings).",
		}),
	}
	m.postAccepted = m.posts.WithLabelValues("accepted")
	m.postDuplicate = m.posts.WithLabelValues("duplicate")
	m.postRejected = m.posts.WithLabelValues("rejected")
	m.postUnauthorized = m.posts.WithLabelValues("unauthorized")
	m.postUnavailable = m.posts.WithLabelValues("unavailable")
	for _, c := range []prometheus.Collector{m.posts, m.appendSeconds, m.dispatchQueue, m.dispatchDropped,
		m.dispatchLatency, m.delivered, m.swept, m.bindErrors, m.lookupErrors, m.ringRouted, m.forwarded,
		m.forwardFailed, m.misrouted, m.deferred, m.departRefuted,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register node metrics: %w", err)
		}
	}
	return m, nil
}
