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
	postAccepted, postDuplicate, postRejected, postUnauthorized, postUnavailable, postDraining prometheus.Counter

	appendSeconds   prometheus.Histogram
	unresolved      prometheus.Gauge
	resolved        *prometheus.CounterVec
	dispatchQueue   prometheus.Gauge
	dispatchWaits   prometheus.Counter
	dispatchLatency prometheus.Histogram
	delivered       prometheus.Counter
	swept           prometheus.Counter
	bindErrors      prometheus.Counter
	leaseLost       prometheus.Counter
	lookupErrors    prometheus.Counter
	ringRouted      prometheus.Counter
	forwarded       prometheus.Counter
	misrouted       prometheus.Counter
	deferred        prometheus.Counter
	deferDropped    prometheus.Counter
	handOffRetries  prometheus.Counter
	departRefuted   prometheus.Counter
	resyncs         *prometheus.CounterVec
	cursorLag       prometheus.Gauge
	clockSkew       *prometheus.GaugeVec
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
		unresolved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_store_unresolved_appends", Help: "Appends whose outcome was lost (a timeout), being settled with the store; each holds the node's cursor back.",
		}),
		resolved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_store_resolved_appends_total", Help: "Appends whose lost outcome was settled: stored (then dispatched) or fenced (never stored).",
		}, []string{"outcome"}),
		dispatchQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dispatch_queue", Help: "Stored messages waiting for dispatch.",
		}),
		dispatchWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_queue_full_total", Help: "Times a stored message waited for room in the dispatch queue (DispatchQueue); the POST waits with it.",
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
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_binding_lease_lost_total", Help: "Lease renewals that found the lease gone (the binding store lost it): every user is bound again and every connection resyncs.",
		}),
		lookupErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_lookup_errors_total", Help: "Binding lookups that failed (dispatch then sends to every push node).",
		}),
		ringRouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_ring_routed_total", Help: "Recipients sent to their ring owner for want of a binding.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_forwarded_total", Help: "Deliveries queued for other push nodes.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_deferred_total", Help: "Deliveries held for a node the binding store named before gossip did.",
		}),
		deferDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_deferred_dropped_total", Help: "Deliveries held for an unknown node too long (DeferTimeout); the node recovers them from the store.",
		}),
		handOffRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatch_handoff_retries_total", Help: "Batches a collect-only node offered again because no dispatch node took them.",
		}),
		misrouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_push_misrouted_total", Help: "Recipients of a delivery that had no connection here and were looked up again.",
		}),
		departRefuted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cluster_departures_refuted_total", Help: "Nodes that left gossip or were declared dead and came back within DepartGrace (kept their bindings).",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_push_resyncs_total", Help: "Resyncs started (connections recover in place what they may have missed), by reason.",
		}, []string{"reason"}),
		cursorLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_push_cursor_lag_seconds", Help: "How far the node's cursor (the resume position its frames carry) is behind its clock.",
		}),
		clockSkew: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_clock_skew_seconds", Help: "This node's clock minus the store's, measured with the round trip halved.",
		}, []string{"store"}),
	}
	m.postAccepted = m.posts.WithLabelValues("accepted")
	m.postDuplicate = m.posts.WithLabelValues("duplicate")
	m.postRejected = m.posts.WithLabelValues("rejected")
	m.postUnauthorized = m.posts.WithLabelValues("unauthorized")
	m.postUnavailable = m.posts.WithLabelValues("unavailable")
	m.postDraining = m.posts.WithLabelValues("draining")
	for _, c := range []prometheus.Collector{m.posts, m.appendSeconds, m.unresolved, m.resolved, m.dispatchQueue,
		m.dispatchWaits, m.dispatchLatency, m.delivered, m.swept, m.bindErrors, m.leaseLost, m.lookupErrors,
		m.ringRouted, m.forwarded, m.misrouted, m.deferred, m.deferDropped, m.handOffRetries, m.departRefuted,
		m.resyncs, m.cursorLag, m.clockSkew,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register node metrics: %w", err)
		}
	}
	return m, nil
}
