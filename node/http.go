package node

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldpush/herald/edge"
	"github.com/heraldpush/herald/storage"
)

// routes builds the public HTTP handler.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("GET /readyz", n.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/nodes", n.nodes)
	mux.HandleFunc("GET /v1/route", n.route)
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
	if p := n.skew.problem(); p != "" {
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, "clock_skew", p})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (n *Node) nodes(w http.ResponseWriter, _ *http.Request) {
	members := n.Members()
	for i := range members {
		if members[i].ID == n.self.ID && members[i].Incarnation == n.self.Incarnation {
			members[i].Connections = n.localInfo().Connections
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": members})
}

// route answers which push node should hold a user: its ring owner among
// the push nodes that are alive and not draining. Clients connect there,
// so that the ring is right most of the time and dispatch can fall back
// on it.
func (n *Node) route(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if err := storage.ValidateUser(user); err != nil {
		writeAPIError(w, badRequest("bad_user", "user: %s", strings.TrimPrefix(err.Error(), storage.ErrInvalid.Error()+": ")))
		return
	}
	var id, public string
	if n.cluster == nil {
		if n.edge != nil {
			id, public = n.self.ID, n.public
		}
	} else if m, ok := n.cluster.owner(user); ok {
		id, public = m.ID, m.PublicURL
	}
	if id == "" {
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, "no_push_node", "no push node is available"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"user": user, "node": id, "url": wsURL(public)})
}
