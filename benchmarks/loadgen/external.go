package loadgen

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// External describes servers the load tool does not start: a running
// Herald cluster (or a baseline), named by their HTTP base URLs.
type External struct {
	URLs      []string // http://host:port of each node; ws:// is accepted too
	JWTSecret string   // signs the clients' tokens (Herald's --jwt-secret)
	APIKey    string   // Herald's --api-key, for POST /v1/messages
}

// Connect returns a Server for each URL. Its resource figures come from
// the server's /metrics (process_resident_memory_bytes,
// process_cpu_seconds_total) since its process may be on another machine.
func (e External) Connect(ctx context.Context, kind string) ([]*Server, error) {
	var out []*Server
	for i, raw := range e.URLs {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--url %q: want http://host:port", raw)
		}
		scheme := map[string]string{"ws": "http", "wss": "https", "http": "http", "https": "https"}[u.Scheme]
		if scheme == "" {
			return nil, fmt.Errorf("--url %q: want http://host:port", raw)
		}
		base := scheme + "://" + u.Host
		s := &Server{Kind: kind, Name: fmt.Sprintf("%s-%d", u.Host, i+1), HTTP: base,
			WS: strings.Replace(base, "http", "ws", 1) + "/ws", external: true, log: &lineLog{},
			apiKey: e.APIKey, client: newHTTPClient()}
		if e.JWTSecret != "" {
			s.secret = []byte(e.JWTSecret)
		}
		if kind == "herald" {
			var v struct{ Nodes []struct{ ID string } }
			if err := s.getJSON(ctx, "/v1/nodes", &v); err != nil {
				return nil, fmt.Errorf("%s is not a Herald node: %w", base, err)
			}
			if s.secret == nil || s.apiKey == "" {
				return nil, fmt.Errorf("%s: give the cluster's --jwt-secret and --api-key", base)
			}
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no --url")
	}
	return out, nil
}

func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
}

// remoteUsage reads an external server's RSS and CPU from its /metrics;
// with settle, it waits (up to 10 s) for two readings 500 ms apart to
// agree within 1%.
func (s *Server) remoteUsage(ctx context.Context, settle bool) (Usage, error) {
	read := func() (Usage, error) {
		m, err := s.metrics(ctx)
		if err != nil {
			return Usage{}, err
		}
		rss, ok := m["process_resident_memory_bytes"]
		if !ok {
			return Usage{}, fmt.Errorf("%s: no process_resident_memory_bytes in /metrics", s.Name)
		}
		return Usage{RSS: int64(rss), CPU: time.Duration(m["process_cpu_seconds_total"] * float64(time.Second)),
			HeapInuse: int64(m["go_memstats_heap_inuse_bytes"]), Goroutines: int64(m["go_goroutines"])}, nil
	}
	u, err := read()
	if err != nil || !settle {
		return u, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		next, err := read()
		if err != nil {
			return next, err
		}
		if math.Abs(float64(next.RSS-u.RSS)) <= 0.01*float64(u.RSS) {
			return next, nil
		}
		u = next
	}
	return u, nil
}

// loopback reports whether every server listens on a loopback address,
// where the tool picks its own source addresses (127.0.0.2, ...).
func loopback(ss []*Server) bool {
	for _, s := range ss {
		u, err := url.Parse(s.HTTP)
		if err != nil {
			return false
		}
		ip := net.ParseIP(u.Hostname())
		if ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}
