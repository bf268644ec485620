package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// RemoteConfig configures a client of a remote auth service.
//
// The contract (docs/CLUSTER.md): Herald POSTs {"token":"<token>"} to URL
// with Content-Type application/json (and Authorization: Bearer <Secret>
// if set). The service answers
//
//	200 {"user":"alice","expires_at":1795659803}   token valid (expires_at, Unix seconds, optional)
//	401 or 403 {"error":{"message":"..."}}          token invalid (the message is shown to the client)
//
// Anything else (other statuses, timeouts, refused connections) means the
// service is unavailable and the client is asked to retry.
type RemoteConfig struct {
	// URL of the verification endpoint.
	URL string
	// Secret, if set, is sent as Authorization: Bearer, so the service can
	// tell Herald from other callers.
	Secret string
	// Timeout bounds one call.
	Timeout time.Duration
	// CacheTTL is how long a valid answer is reused for the same token (never
	// past its expiry); 0 disables the cache. Reconnect storms repeat tokens.
	CacheTTL time.Duration
	// CacheSize bounds the cached tokens.
	CacheSize int
	// Client is the HTTP client; nil uses one with Timeout.
	Client *http.Client
}

// DefaultRemoteConfig returns the defaults.
func DefaultRemoteConfig() RemoteConfig {
	return RemoteConfig{
		// An auth check happens during a handshake, whose whole budget is 10 s.
		Timeout: 3 * time.Second,
		// Long enough to absorb a reconnect storm after a node restart,
		// short enough that a revoked token stops working soon.
		CacheTTL:  30 * time.Second,
		CacheSize: 100000,
	}
}

// Remote verifies tokens with a remote auth service over HTTP. It is safe
// for concurrent use.
type Remote struct {
	cfg    RemoteConfig
	client *http.Client

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	id    Identity
	until time.Time
}

// NewRemote builds a client; it makes no request.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("auth url %q: want http(s)://host/path", cfg.URL)
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("auth: remote timeout must be positive")
	}
	c := cfg.Client
	if c == nil {
		c = &http.Client{Timeout: cfg.Timeout}
	}
	return &Remote{cfg: cfg, client: c, cache: make(map[[32]byte]cached)}, nil
}

// Authenticate implements the node's Authenticator.
func (r *Remote) Authenticate(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token)) // never keep tokens themselves in memory
	now := time.Now()
	if r.cfg.CacheTTL > 0 {
		r.mu.Lock()
		c, ok := r.cache[key]
		r.mu.Unlock()
		if ok && now.Before(c.until) {
			return c.id, nil
		}
	}
	id, err := r.call(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	if !id.Expires.IsZero() && !id.Expires.After(now) {
		return Identity{}, fmt.Errorf("%w: token has expired", ErrInvalidToken)
	}
	if r.cfg.CacheTTL > 0 {
		until := now.Add(r.cfg.CacheTTL)
		if !id.Expires.IsZero() && id.Expires.Before(until) {
			until = id.Expires
		}
		r.mu.Lock()
		if len(r.cache) >= r.cfg.CacheSize {
			for k, c := range r.cache { // evict the expired, or anything
				if len(r.cache) < r.cfg.CacheSize && !now.After(c.until) {
					break
				}
				delete(r.cache, k)
			}
		}
		r.cache[key] = cached{id: id, until: until}
		r.mu.Unlock()
	}
	return id, nil
}

func (r *Remote) call(ctx context.Context, token string) (Identity, error) {
	body, _ := json.Marshal(map[string]string{"token": token})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.Secret != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.Secret)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: reading the answer: %v", ErrUnavailable, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var ok struct {
			User      string `json:"user"`
			ExpiresAt int64  `json:"expires_at"`
		}
		if err := json.Unmarshal(raw, &ok); err != nil || ok.User == "" {
			return Identity{}, fmt.Errorf("%w: the auth service answered 200 without a user", ErrUnavailable)
		}
		id := Identity{User: ok.User}
		if ok.ExpiresAt > 0 {
			id.Expires = time.Unix(ok.ExpiresAt, 0)
		}
		return id, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := "the auth service rejected the token"
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		return Identity{}, fmt.Errorf("%w: %s", ErrInvalidToken, msg)
	}
	return Identity{}, fmt.Errorf("%w: the auth service answered %s", ErrUnavailable, resp.Status)
}
