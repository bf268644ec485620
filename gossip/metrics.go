package gossip

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's Prometheus collectors. No label carries a node
// name: label values come from small fixed sets.
type metrics struct {
	members   prometheus.Gauge
	events    *prometheus.CounterVec
	coalesced prometheus.Counter
	rejected  prometheus.Counter
	joins     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_gossip_members", Help: "Live cluster members this node sees, itself included.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_gossip_events_total", Help: "Membership events from memberlist, by type (before coalescing).",
		}, []string{"type"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_gossip_events_coalesced_total", Help: "Membership events merged into a queued event before delivery.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_gossip_rejected_alive_total", Help: "Alive messages ignored because the node's metadata did not decode or match its name.",
		}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_gossip_seed_joins_total", Help: "Attempts to join seeds that were not members, by result (ok: at least one seed answered).",
		}, []string{"result"}),
	}
	for _, t := range []EventType{Join, Leave, Update} {
		m.events.WithLabelValues(t.String())
	}
	m.joins.WithLabelValues("ok")
	m.joins.WithLabelValues("failed")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.members, m.events, m.coalesced, m.rejected, m.joins} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register gossip metrics: %w", err)
			}
		}
	}
	return m, nil
}
