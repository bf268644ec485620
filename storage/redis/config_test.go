package redis

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tc := range []struct {
		says  string
		tweak func(*Config)
	}{
		{"url", func(c *Config) { c.URL = "http://x" }},
		{"prefix", func(c *Config) { c.KeyPrefix = "{herald}:" }},
		{"key TTL", func(c *Config) { c.KeyTTL = time.Millisecond }},
		{"timeouts", func(c *Config) { c.ReadTimeout = 0 }},
		{"timeouts", func(c *Config) { c.PoolTimeout = -1 }},
		{"pool size", func(c *Config) { c.PoolSize = -1 }},
		{"retries", func(c *Config) { c.MaxRetries = -1 }},
		{"batch", func(c *Config) { c.LookupBatch = 0 }},
		{"batch", func(c *Config) { c.LookupBatch = MaxLookupBatch + 1 }},
		{"cache", func(c *Config) { c.LeaseCacheTTL = -time.Second }},
	} {
		c := DefaultConfig()
		tc.tweak(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Validate() = %v", tc.says, err)
		}
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New() = %v", tc.says, err)
		}
	}
	// Zero retries and an empty prefix are allowed.
	c := DefaultConfig()
	c.MaxRetries, c.KeyPrefix, c.LeaseCacheTTL = 0, "", 0
	if err := c.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

// New picks the client for the URL's topology and dials nothing.
func TestNewTopology(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"redis://127.0.0.1:1":                            "*redis.Client",
		"redis://127.0.0.1:1?addr=127.0.0.1:2":           "*redis.ClusterClient",
		"redis://127.0.0.1:1?cluster=true":               "*redis.ClusterClient",
		"redis://127.0.0.1:1?master_name=m&addr=[::1]:2": "*redis.Client", // a failover client
	} {
		c := DefaultConfig()
		c.URL = url
		b, err := New(c)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if got := typeName(b.client); got != want {
			t.Errorf("%s: client %s, want %s", url, got, want)
		}
		if err := b.Close(); err != nil {
			t.Errorf("%s: close: %v", url, err)
		}
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
