package gossip

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := fastConfig("1", "a")
	if err := ok.Validate(); err != nil {
		t.Fatalf("fast config: %v", err)
	}
	def := DefaultConfig()
	def.Meta = testMeta("1", "a")
	if err := def.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no meta":              func(c *Config) { c.Meta = Meta{} },
		"profile":              func(c *Config) { c.Profile = "wan" },
		"bind port":            func(c *Config) { c.BindPort = 70000 },
		"advertise port alone": func(c *Config) { c.AdvertisePort = 7000 },
		"advertise hostname":   func(c *Config) { c.AdvertiseAddr = "node1.example.com" },
		"no bind addr":         func(c *Config) { c.BindAddr = "" },
		"negative rejoin":      func(c *Config) { c.RejoinInterval = -time.Second },
		"negative probe":       func(c *Config) { c.ProbeInterval = -time.Second },
		"probe timeout":        func(c *Config) { c.ProbeTimeout = c.ProbeInterval },
		"broadcast timeout":    func(c *Config) { c.BroadcastTimeout = 0 },
		"event buffer":         func(c *Config) { c.EventBuffer = -1 },
		"seed without port":    func(c *Config) { c.Seeds = []string{"10.0.0.1"} },
		"seed port 0":          func(c *Config) { c.Seeds = []string{"10.0.0.1:0"} },
		"seed without host":    func(c *Config) { c.Seeds = []string{":7946"} },
	} {
		c := fastConfig("1", "a")
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	c := fastConfig("1", "a")
	c.Seeds = []string{"seed.example.com:7946", "[::1]:7946", "10.0.0.1:7946"}
	if err := c.Validate(); err != nil {
		t.Errorf("seeds: %v", err)
	}
}

func TestProfileOverrides(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	mc := c.profile()
	if mc.ProbeInterval != time.Second || mc.PushPullInterval != 30*time.Second {
		t.Errorf("lan profile: %v %v", mc.ProbeInterval, mc.PushPullInterval)
	}
	c.Profile = ProfileLocal
	c.PushPullInterval = time.Second
	c.SuspicionMult = 7
	mc = c.profile()
	if mc.ProbeTimeout != 200*time.Millisecond || mc.PushPullInterval != time.Second || mc.SuspicionMult != 7 {
		t.Errorf("local profile with overrides: %v %v %v", mc.ProbeTimeout, mc.PushPullInterval, mc.SuspicionMult)
	}
}

func TestDeriveKey(t *testing.T) {
	t.Parallel()
	s := []byte("cluster secret")
	k1, k2 := DeriveKey(s, "a"), DeriveKey(s, "a")
	if len(k1) != 32 || !bytes.Equal(k1, k2) {
		t.Fatalf("not deterministic or not 32 bytes: %x %x", k1, k2)
	}
	if bytes.Equal(k1, DeriveKey(s, "b")) || bytes.Equal(k1, DeriveKey([]byte("other"), "a")) {
		t.Error("different purposes or secrets give the same key")
	}
	if bytes.Equal(DeriveKey(s, purposeGossipKey), DeriveKey(s, purposeGossipLabel)) {
		t.Error("gossip key and label share derivation")
	}
	if got := gossipLabel(nil); got != "herald" {
		t.Errorf("label without secret: %q", got)
	}
	l := gossipLabel(s)
	if !strings.HasPrefix(l, "herald-") || len(l) != len("herald-")+8 || l == gossipLabel([]byte("other")) {
		t.Errorf("label %q", l)
	}
	mc := (&Config{ClusterSecret: s, Profile: ProfileLAN}).memberlistConfig(&delegate{}, slog.New(slog.DiscardHandler))
	if mc.Label != l || !bytes.Equal(mc.SecretKey, DeriveKey(s, purposeGossipKey)) || !mc.GossipVerifyIncoming || !mc.GossipVerifyOutgoing {
		t.Errorf("memberlist config: label %q key %x", mc.Label, mc.SecretKey)
	}
	mc = (&Config{Profile: ProfileLAN}).memberlistConfig(&delegate{}, slog.New(slog.DiscardHandler))
	if mc.Label != "herald" || mc.SecretKey != nil {
		t.Errorf("memberlist config without secret: label %q key %x", mc.Label, mc.SecretKey)
	}
}

func TestLogWriter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := logWriter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if _, err := w.Write([]byte("[WARN] memberlist: Was able to connect to x\n")); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"level=DEBUG", `msg="Was able to connect to x"`, "source=memberlist", "ml_level=WARN"} {
		if !strings.Contains(out, want) {
			t.Errorf("%q lacks %q", out, want)
		}
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	cfg := fastConfig("1", "a")
	cfg.Transport = newMemNet().transport("")
	cfg.Registerer = reg
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil {
		t.Error("a second New registered the same metrics")
	}
	if g.State() != StateNew || g.Members() != nil || g.Addr() != "" {
		t.Errorf("new: %v %v %q", g.State(), g.Members(), g.Addr())
	}
	if err := g.Leave(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Leave before Start: %v", err)
	}
	m := g.Local().Meta
	m.State = "starting"
	if err := g.UpdateMeta(ctx, m); err != nil || g.Local().State != "starting" {
		t.Errorf("UpdateMeta before Start: %v, %q", err, g.Local().State)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v", err)
	}
	if g.State() != StateRunning || g.Addr() == "" {
		t.Errorf("running: %v %q", g.State(), g.Addr())
	}
	first := <-g.Events()
	if first.Type != Join || first.Member.State != "starting" || first.Member.Addr != g.Addr() {
		t.Errorf("first event %+v", first)
	}
	if err := g.Leave(ctx); err != nil { // alone: nobody to tell
		t.Errorf("Leave alone: %v", err)
	}
	if ev := <-g.Events(); ev.Type != Leave || ev.Member.NodeName() != "1.a" {
		t.Errorf("own leave: %+v", ev)
	}
	for range 2 {
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	if _, open := <-g.Events(); open {
		t.Error("Events open after Shutdown")
	}
	if g.State() != StateShutdown || g.Members() != nil {
		t.Errorf("shut down: %v %v", g.State(), g.Members())
	}
	if err := g.Leave(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Leave after Shutdown: %v", err)
	}
	if err := g.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Errorf("Start after Shutdown: %v", err)
	}
	for s := StateNew; s <= StateShutdown+1; s++ {
		if s.String() == "" {
			t.Errorf("State(%d) has no name", s)
		}
	}
	if EventType(0).String() != "EventType(0)" || Update.String() != "update" {
		t.Error("EventType names")
	}
}

func TestShutdownWithoutStart(t *testing.T) {
	t.Parallel()
	g, err := New(fastConfig("1", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, open := <-g.Events(); open {
		t.Error("Events open")
	}
}
