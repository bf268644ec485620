package gossip

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Timing profiles: memberlist's defaults for a LAN and for loopback.
const (
	ProfileLAN   = "lan"
	ProfileLocal = "local"
)

// Config configures a Gossip. Start from DefaultConfig.
type Config struct {
	// Meta is what this node advertises. Its ID and Incarnation name the
	// node in memberlist (ID "." Incarnation) and cannot change later;
	// UpdateMeta changes the rest.
	Meta Meta

	// BindAddr is the address gossip listens on, UDP and TCP alike.
	// Ignored when Transport is set.
	BindAddr string
	// BindPort is the port gossip listens on; 0 picks a free port, which
	// Addr reports after Start. Ignored when Transport is set.
	BindPort int
	// AdvertiseAddr is the IP other nodes reach this one at; empty
	// advertises BindAddr, or a private IP of this host when BindAddr is
	// 0.0.0.0. Set it behind NAT or in containers.
	AdvertiseAddr string
	// AdvertisePort goes with AdvertiseAddr; 0 advertises the bound port.
	AdvertisePort int

	// Seeds are host:port gossip addresses of nodes to join. They may be
	// down and may include this node's own address. A hostname is resolved
	// on every attempt and every address it resolves to is contacted.
	Seeds []string
	// RejoinInterval is how often seeds that are not members are joined
	// again, so a node that started alone, or a side of a healed
	// partition, merges with the rest. Each wait is jittered by ±20%.
	// Zero disables rejoining (not recommended).
	RejoinInterval time.Duration

	// ClusterSecret encrypts gossip (AES-256-GCM with a key derived from
	// it) and labels every packet, so clusters with different secrets
	// ignore each other. Every node of a cluster has the same secret. An
	// empty secret sends gossip in clear text under the label "herald":
	// development only.
	ClusterSecret []byte

	// Profile picks memberlist's timing defaults: ProfileLAN (probe every
	// 1 s, 500 ms probe timeout, push/pull every 30 s) or ProfileLocal
	// (loopback: 200 ms probe timeout, push/pull every 15 s). The fields
	// below override single values when nonzero.
	Profile string
	// ProbeInterval is how often each node probes a random member.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for its ack; it must be
	// shorter than ProbeInterval.
	ProbeTimeout time.Duration
	// GossipInterval is how often a node gossips queued messages.
	GossipInterval time.Duration
	// SuspicionMult scales how long a suspect node may refute before it
	// is declared dead: SuspicionMult * max(1, log10(members)) *
	// ProbeInterval, up to six times that while few nodes confirm.
	SuspicionMult int
	// PushPullInterval is how often a node syncs full state with a
	// random member over TCP.
	PushPullInterval time.Duration

	// BroadcastTimeout bounds Leave and UpdateMeta when their context has
	// no deadline.
	BroadcastTimeout time.Duration
	// EventBuffer is the capacity of the Events channel. Events beyond it
	// wait, coalesced, in an internal queue.
	EventBuffer int

	// Transport replaces memberlist's UDP/TCP transport, for tests (such
	// as memberlist.MockNetwork). Gossip owns it from Start on and shuts
	// it down; a restarted node needs a new one.
	Transport memberlist.NodeAwareTransport
	// WrapTransport, if set, wraps the UDP/TCP transport gossip creates
	// (when Transport is not set): fault drills drop traffic with it.
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// Logger receives the package's logs, and memberlist's at debug level;
	// nil discards them.
	Logger *slog.Logger
	// Registerer receives the package's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults, each chosen for nodes on one LAN or
// data centre. Meta, Seeds and ClusterSecret have no default.
func DefaultConfig() Config {
	return Config{
		// Every interface, on memberlist's well-known port, so seeds can be
		// given as plain host:7946.
		BindAddr: "0.0.0.0",
		BindPort: 7946,
		// memberlist forgets dead nodes and never contacts them again, so a
		// partition longer than its gossip-to-the-dead window (30 s on a
		// LAN) never heals on its own; one push/pull per missing seed every
		// 30 s heals it within a minute at no measurable cost.
		RejoinInterval: 30 * time.Second,
		// Herald nodes of one cluster share a network; the LAN profile
		// detects a dead node in about 7 s (up to about 25 s when the
		// cluster is larger and confirmations are slow).
		Profile: ProfileLAN,
		// A leave or update reaches a peer in one gossip round (200 ms on
		// a LAN); 5 s covers a loaded node without holding up shutdown.
		BroadcastTimeout: 5 * time.Second,
		// Events come in bursts of a few per node joining or leaving; 64
		// absorbs a burst while the consumer catches up.
		EventBuffer: 64,
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if err := c.Meta.Validate(); err != nil {
		return fmt.Errorf("gossip config: Meta: %w", err)
	}
	switch {
	case c.Profile != ProfileLAN && c.Profile != ProfileLocal:
		return fmt.Errorf("gossip config: Profile %q is not %q or %q", c.Profile, ProfileLAN, ProfileLocal)
	case c.BindPort < 0 || c.BindPort > 65535:
		return fmt.Errorf("gossip config: BindPort %d out of range", c.BindPort)
	case c.AdvertisePort < 0 || c.AdvertisePort > 65535:
		return fmt.Errorf("gossip config: AdvertisePort %d out of range", c.AdvertisePort)
	case c.AdvertisePort != 0 && c.AdvertiseAddr == "":
		return errors.New("gossip config: AdvertisePort needs AdvertiseAddr")
	case c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil:
		return fmt.Errorf("gossip config: AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
	case c.Transport == nil && c.BindAddr == "":
		return errors.New("gossip config: BindAddr is required")
	case c.RejoinInterval < 0:
		return errors.New("gossip config: RejoinInterval must not be negative")
	case c.ProbeInterval < 0, c.ProbeTimeout < 0, c.GossipInterval < 0, c.PushPullInterval < 0, c.SuspicionMult < 0:
		return errors.New("gossip config: timing overrides must not be negative")
	case c.BroadcastTimeout <= 0:
		return errors.New("gossip config: BroadcastTimeout must be positive")
	case c.EventBuffer < 0:
		return errors.New("gossip config: EventBuffer must not be negative")
	}
	for _, s := range c.Seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return fmt.Errorf("gossip config: seed %q is not host:port", s)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("gossip config: seed %q has a bad port", s)
		}
	}
	mc := c.profile()
	if mc.ProbeTimeout >= mc.ProbeInterval {
		return fmt.Errorf("gossip config: ProbeTimeout %v is not shorter than ProbeInterval %v", mc.ProbeTimeout, mc.ProbeInterval)
	}
	return nil
}

// profile returns the memberlist timing profile with c's overrides.
func (c *Config) profile() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	if c.Profile == ProfileLocal {
		mc = memberlist.DefaultLocalConfig()
	}
	if c.ProbeInterval > 0 {
		mc.ProbeInterval = c.ProbeInterval
	}
	if c.ProbeTimeout > 0 {
		mc.ProbeTimeout = c.ProbeTimeout
	}
	if c.GossipInterval > 0 {
		mc.GossipInterval = c.GossipInterval
	}
	if c.SuspicionMult > 0 {
		mc.SuspicionMult = c.SuspicionMult
	}
	if c.PushPullInterval > 0 {
		mc.PushPullInterval = c.PushPullInterval
	}
	return mc
}

// memberlistConfig builds the memberlist configuration for a Gossip.
func (c *Config) memberlistConfig(d *delegate, logger *slog.Logger) *memberlist.Config {
	mc := c.profile()
	mc.Name = c.Meta.NodeName()
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = c.BindPort // memberlist replaces it when BindPort is 0
	}
	if c.Transport != nil {
		mc.Transport = c.Transport
	}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d
	mc.Label = gossipLabel(c.ClusterSecret)
	if len(c.ClusterSecret) > 0 {
		mc.SecretKey = DeriveKey(c.ClusterSecret, purposeGossipKey)
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	// memberlist logs through a *log.Logger; a discarding one skips the
	// formatting too.
	var w io.Writer = io.Discard
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		w = logWriter{logger}
	}
	mc.Logger = log.New(w, "", 0)
	return mc
}

// Purposes for DeriveKey. Each derived key is independent of the others.
const (
	purposeGossipKey   = "herald gossip encryption key v1"
	purposeGossipLabel = "herald gossip label v1"
)

// DeriveKey derives a 32-byte key for purpose from the cluster secret with
// HKDF-SHA256. Keys for different purposes are independent, and none
// reveals the secret or another key, so every internal channel (gossip,
// RPC) can derive its own from the one ClusterSecret. Callers must treat
// an empty secret as "no security" themselves: DeriveKey derives a key
// from it anyway.
func DeriveKey(secret []byte, purpose string) []byte {
	k, _ := hkdf.Key(sha256.New, secret, []byte("herald"), purpose, 32) // fails only above 255*32 bytes
	return k
}

// gossipLabel is the memberlist label: packets and streams carrying
// another label are dropped. It is public (sent in clear), so it is derived
// one way from the secret and identifies the cluster, not the key.
func gossipLabel(secret []byte) string {
	if len(secret) == 0 {
		return "herald"
	}
	return "herald-" + hex.EncodeToString(DeriveKey(secret, purposeGossipLabel)[:4])
}
