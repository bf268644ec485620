package node

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldpush/herald/edge"
)

// routes builds the public HTTP handler.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("GET /readyz", n.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/nodes", n.nodes)
	if n.cfg.Has(RoleCollect) {
		mux.Handle("/v1/messages", &collector{n})
	}
	if n.edge != nil {
		mux.Handle("/ws", n.edge)
		static := edge.ClientFiles()
		mux.Handle("GET /herald.js", static)
		mux.Handle("GET /{$}", static)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		edge.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
	return mux
}

// healthz answers 200 while the process serves HTTP: liveness only.
func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when the node should get traffic: running (not
// draining) and its message store answers.
func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	if st := n.State(); st != StateRunning {
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, "not_ready", "node is " + st.String()})
		return
	}
	if n.cfg.Messages != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := n.cfg.Messages.Ping(ctx)
		cancel()
		if err != nil {
			writeAPIError(w, &apiError{http.StatusServiceUnavailable, "not_ready", "message store: " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// nodeInfo describes a member in GET /v1/nodes.
type nodeInfo struct {
	ID          string `json:"id"`
	Incarnation string `json:"incarnation"`
	Roles       []Role `json:"roles"`
	Addr        string `json:"addr"`
	State       string `json:"state"`
	Connections *int   `json:"connections,omitempty"`
}

func (n *Node) nodes(w http.ResponseWriter, _ *http.Request) {
	info := nodeInfo{ID: n.self.ID, Incarnation: n.self.Incarnation, Roles: n.cfg.Roles, Addr: n.Addr(), State: n.State().String()}
	if n.edge != nil {
		c := n.edge.Connections()
		info.Connections = &c
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": []nodeInfo{info}})
}
