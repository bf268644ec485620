package mongo_test

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/heraldpush/herald/storage/mongo"
)

func TestParseWriteConcern(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want any // W of the result, or nil for an error
	}{
		{"majority", "majority"},
		{" majority ", "majority"},
		{"1", 1},
		{"3", 3},
		{"dc-aware", "dc-aware"}, // a custom write concern defined on the replica set
		{"0", nil},               // unacknowledged: cannot promise durability
		{"-1", nil},
		{"+2", nil},
		{"2x", nil},
		{"", nil},
	} {
		wc, err := mongo.ParseWriteConcern(tc.in)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("%q: got %+v, want an error", tc.in, wc)
		case tc.want != nil && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.want != nil && wc.W != tc.want:
			t.Errorf("%q: W = %v, want %v", tc.in, wc.W, tc.want)
		case tc.want != nil && !wc.Acknowledged():
			t.Errorf("%q: unacknowledged", tc.in)
		}
	}
	if wc, _ := mongo.ParseWriteConcern("majority"); wc.W != writeconcern.Majority().W {
		t.Errorf("majority parsed as %v", wc.W)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := mongo.DefaultConfig()
	good.URI = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with a URI: %v", err)
	}
	srv := good
	srv.URI = "mongodb+srv://cluster.example.com/"
	if err := srv.Validate(); err != nil {
		t.Fatalf("SRV URI (not resolved by Validate): %v", err)
	}
	for name, mutate := range map[string]func(c *mongo.Config){
		"no uri":               func(c *mongo.Config) { c.URI = "" },
		"not a mongodb uri":    func(c *mongo.Config) { c.URI = "http://localhost" },
		"bad uri option":       func(c *mongo.Config) { c.URI = "mongodb://h/?w=banana&journal=maybe" },
		"no database":          func(c *mongo.Config) { c.Database = "" },
		"database with dot":    func(c *mongo.Config) { c.Database = "a.b" },
		"long database":        func(c *mongo.Config) { c.Database = strings.Repeat("d", 64) },
		"no collection":        func(c *mongo.Config) { c.Collection = "" },
		"system collection":    func(c *mongo.Config) { c.Collection = "system.users" },
		"dollar collection":    func(c *mongo.Config) { c.Collection = "a$b" },
		"w0":                   func(c *mongo.Config) { c.WriteConcern = "0" },
		"no write concern":     func(c *mongo.Config) { c.WriteConcern = "" },
		"no connect timeout":   func(c *mongo.Config) { c.ConnectTimeout = 0 },
		"no selection timeout": func(c *mongo.Config) { c.ServerSelectionTimeout = -time.Second },
		"no op timeout":        func(c *mongo.Config) { c.OperationTimeout = 0 },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

func TestDefaultConfigFailsFast(t *testing.T) {
	t.Parallel()
	c := mongo.DefaultConfig()
	if c.ServerSelectionTimeout > 2*time.Second || c.ConnectTimeout > 2*time.Second {
		t.Fatalf("defaults would hold callers while MongoDB is down: %+v", c)
	}
	if c.WriteConcern != "majority" || c.Database != "herald" || c.Collection != "messages" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}
