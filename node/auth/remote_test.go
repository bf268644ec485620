package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// authService is a small real HTTP auth service: tokens "ok:<user>" are
// valid, "down" answers 503, anything else 401.
func authService(t *testing.T, calls *atomic.Int64) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer svc-secret" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var req struct{ Token string }
		json.NewDecoder(r.Body).Decode(&req)
		switch {
		case req.Token == "down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case len(req.Token) > 3 && req.Token[:3] == "ok:":
			json.NewEncoder(w).Encode(map[string]any{"user": req.Token[3:], "expires_at": time.Now().Add(time.Hour).Unix()})
		case req.Token == "expired":
			json.NewEncoder(w).Encode(map[string]any{"user": "x", "expires_at": time.Now().Add(-time.Hour).Unix()})
		default:
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"message":"unknown token"}}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRemote(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := authService(t, &calls)
	cfg := DefaultRemoteConfig()
	cfg.URL, cfg.Secret = srv.URL, "svc-secret"
	r, err := NewRemote(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := r.Authenticate(ctx, "ok:alice")
	if err != nil || id.User != "alice" || time.Until(id.Expires) < 50*time.Minute {
		t.Fatalf("valid: %+v %v", id, err)
	}
	if _, err := r.Authenticate(ctx, "ok:alice"); err != nil || calls.Load() != 1 {
		t.Fatalf("second call not served from cache: %d calls, %v", calls.Load(), err)
	}
	if _, err := r.Authenticate(ctx, "nope"); !errors.Is(err, ErrInvalidToken) || err.Error() != "invalid token: unknown token" {
		t.Fatalf("invalid: %v", err)
	}
	if _, err := r.Authenticate(ctx, "expired"); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := r.Authenticate(ctx, "down"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("503: %v", err)
	}
	srv.Close()
	if _, err := r.Authenticate(ctx, "ok:bob"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("service gone: %v", err)
	}
	if _, err := NewRemote(RemoteConfig{URL: "ftp://x", Timeout: time.Second}); err == nil {
		t.Fatal("bad url accepted")
	}
}
