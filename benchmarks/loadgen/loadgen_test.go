package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestSourceIPs(t *testing.T) {
	ips := SourceIPs(600)
	if ips[0] != "127.0.0.2" {
		t.Fatalf("first source address %s, want 127.0.0.2", ips[0])
	}
	seen := map[string]bool{}
	for _, s := range ips {
		ip := net.ParseIP(s).To4()
		if ip == nil || ip[0] != 127 || ip[3] == 0 || s == "127.0.0.1" || seen[s] {
			t.Fatalf("bad or repeated source address %q", s)
		}
		seen[s] = true
	}
}

func TestQuantilesFromHistogram(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `# TYPE herald_store_append_seconds histogram
herald_store_append_seconds_bucket{le="0.001"} 50
herald_store_append_seconds_bucket{le="0.004"} 90
herald_store_append_seconds_bucket{le="0.016"} 99
herald_store_append_seconds_bucket{le="0.064"} 100
herald_store_append_seconds_bucket{le="+Inf"} 100
herald_store_append_seconds_sum 0.2
herald_store_append_seconds_count 100
`)
	}))
	t.Cleanup(srv.Close)
	s := &Server{HTTP: srv.URL, client: srv.Client()}
	q, err := s.Quantiles(context.Background(), "herald_store_append_seconds", 0.5, 0.9, 0.99, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1, 4, 16, 64} // ms, bucket upper bounds
	for i := range want {
		if q[i] != want[i] {
			t.Fatalf("quantiles = %v, want %v", q, want)
		}
	}
	if _, err := s.Quantiles(context.Background(), "herald_missing_seconds", 0.5); err == nil {
		t.Fatal("quantiles of a missing histogram")
	}
}

func TestLatencyFigures(t *testing.T) {
	r := &run{res: &Result{Figures: map[string]float64{}}}
	var lats []int64
	for i := 1000; i >= 1; i-- { // 1..1000 ms, unsorted
		lats = append(lats, int64(time.Duration(i)*time.Millisecond))
	}
	r.latencyFigures("latency_", lats)
	f := r.res.Figures
	if f["latency_p50_ms"] != 500 || f["latency_p99_ms"] != 990 || f["latency_p999_ms"] != 999 || f["latency_max_ms"] != 1000 {
		t.Fatalf("figures %v", f)
	}
}

// TestCheckCountsLostAndDuplicates feeds check a made-up set of receipts.
func TestCheckCountsLostAndDuplicates(t *testing.T) {
	r := &run{res: &Result{Figures: map[string]float64{}}, users: []string{"a", "b", "c"}}
	rc := Receipts{Users: map[string]map[string]uint16{
		"a": {"m1": 1, "b1": 1},
		"b": {"m2": 3, "b1": 1},
		"c": {},
	}}
	r.check(rc, map[string][]string{"m1": {"a"}, "m2": {"b"}, "m3": {"c"}, "b1": nil})
	// m1 ok; m2 twice repeated; m3 lost; b1 (broadcast) lost at c.
	if r.res.Expected != 6 || r.res.Delivered != 4 || r.res.Lost != 2 || r.res.Duplicates != 2 {
		t.Fatalf("expected %d delivered %d lost %d duplicates %d", r.res.Expected, r.res.Delivered, r.res.Lost, r.res.Duplicates)
	}
}

func TestPosterReusesConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer k" || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if string(b) == "close" {
			w.Header().Set("Connection", "close")
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":%q}`, b)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	p, err := newPoster(srv.URL, "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	for i := range 20 {
		status, b, err := p.post(context.Background(), "/v1/messages", fmt.Appendf(nil, "m%d", i))
		if err != nil || status != http.StatusAccepted || string(b) != fmt.Sprintf(`{"id":"m%d"}`, i) {
			t.Fatalf("post %d: %d %s %v", i, status, b, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 20 sequential POSTs, want 1", n)
	}
	// A response that closes the connection is read, and the next POST dials.
	if status, _, err := p.post(context.Background(), "/", []byte("close")); err != nil || status != http.StatusAccepted {
		t.Fatalf("post with close: %d %v", status, err)
	}
	if status, _, err := p.post(context.Background(), "/", []byte("after")); err != nil || status != http.StatusAccepted {
		t.Fatalf("post after close: %d %v", status, err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	bad, _ := newPoster(srv.URL, "wrong")
	if status, _, err := bad.post(context.Background(), "/", nil); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d %v", status, err)
	}
	bad.close()
}

func TestPostRetriesWithTheSameKey(t *testing.T) {
	var calls atomic.Int64
	keys := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ Key string }
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m.Key == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		keys <- m.Key
		if calls.Add(1) <= 2 { // the store is slow twice
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"code":"store_unavailable","message":"retry with the same key"}}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":"id-%s"}`, m.Key)
	}))
	t.Cleanup(srv.Close)
	s := &Server{Kind: "herald", HTTP: srv.URL, apiKey: "k", keys: true}
	t.Cleanup(func() { s.poster.close() })
	id, err := s.Post(context.Background(), []string{"alice"})
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	if got := s.retries.Load(); got != 2 {
		t.Fatalf("retries = %d, want 2", got)
	}
	close(keys)
	var seen []string
	for k := range keys {
		seen = append(seen, k)
	}
	if len(seen) != 3 || seen[0] != seen[1] || seen[1] != seen[2] || id != "id-"+seen[0] {
		t.Fatalf("keys %v, id %s: want one key sent three times", seen, id)
	}

	// A 4xx is an answer, not a reason to retry.
	var refused atomic.Int64
	strict := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused.Add(1)
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"code":"bad_request","message":"no"}}`)
	}))
	t.Cleanup(strict.Close)
	bad := &Server{Kind: "herald", HTTP: strict.URL, apiKey: "k", keys: true}
	t.Cleanup(func() { bad.poster.close() })
	if _, err := bad.Post(context.Background(), []string{"alice"}); err == nil {
		t.Fatal("a 400 was taken as accepted")
	}
	if n := refused.Load(); n != 1 || bad.retries.Load() != 0 {
		t.Fatalf("%d POSTs and %d retries for a 400, want 1 and 0", n, bad.retries.Load())
	}
}
