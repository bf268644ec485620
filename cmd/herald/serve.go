package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/node"
	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/embedded"
	"github.com/heraldpush/herald/storage/memory"
	"github.com/heraldpush/herald/storage/mongo"
	"github.com/heraldpush/herald/storage/redis"
)

// serveSettings are the flags of "herald serve".
type serveSettings struct {
	config          string
	addr            string
	dataDir         string
	nodeID          string
	roles           string
	jwtSecret       string
	jwtPublicKey    string
	jwtIssuer       string
	jwtAudience     string
	apiKeys         listFlag
	allowedOrigins  listFlag
	maxMessageBytes byteSize
	defaultTTL      time.Duration
	maxTTL          time.Duration
	pingInterval    time.Duration
	idleTimeout     time.Duration
	writeQueueBytes byteSize
	sendBuffer      byteSize
	replayWindow    time.Duration
	replayWorkers   int
	maxSeen         int
	resyncTimeout   time.Duration
	replayRetryFor  time.Duration
	maxUnresolved   int
	appendTimeout   time.Duration
	drainTimeout    time.Duration
	drainSpread     time.Duration
	logLevel        string
	logFormat       string
	redisURL        string
	mongoURI        string
	mongoDatabase   string
	mongoWC         string
	clusterSecret   string
	join            listFlag
	gossipAddr      string
	gossipAdvertise string
	rpcAddr         string
	publicURL       string
	authURL         string
	authSecret      string
	standalone      bool
	debugAddr       string
	chaos           chaosSettings
}

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveSettings) {
	d := node.DefaultConfig()
	s := &serveSettings{maxMessageBytes: byteSize(d.MaxMessageBytes), writeQueueBytes: byteSize(d.Edge.WriteQueueBytes)}
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.config, "config", "", "read settings from `FILE` (lines of name = value)")
	fs.StringVar(&s.addr, "addr", d.Addr, "public HTTP `address` for /ws, /v1/..., /healthz, /readyz and /metrics")
	fs.StringVar(&s.dataDir, "data-dir", "herald-data", "`directory` for the embedded message store and development secrets")
	fs.StringVar(&s.nodeID, "node-id", "", "stable node `name` (default: the host name)")
	fs.StringVar(&s.roles, "roles", "all", "`roles` to run: all, or a list of auth,collect,dispatch,push")
	fs.StringVar(&s.jwtSecret, "jwt-secret", "", "HS256 `secret` that signs connection tokens (default: generated into the data dir, development only)")
	fs.StringVar(&s.jwtPublicKey, "jwt-public-key", "", "PEM `file` with an RSA or P-256 public key, to verify RS256/ES256 tokens instead of HS256")
	fs.StringVar(&s.jwtIssuer, "jwt-issuer", "", "required iss claim of tokens (`issuer`), if set")
	fs.StringVar(&s.jwtAudience, "jwt-audience", "", "required aud claim of tokens (`audience`), if set")
	fs.Var(&s.apiKeys, "api-key", "`keys` (comma-separated) that business systems send as Authorization: Bearer to POST /v1/messages (default: generated into the data dir, development only)")
	fs.Var(&s.allowedOrigins, "allowed-origins", "browser `origins` allowed to connect besides this server's own host, e.g. https://app.example.com,https://*.example.com; * allows any")
	fs.Var(&s.maxMessageBytes, "max-message-bytes", "largest message `size`: the data of a POST, and a frame from a client")
	fs.DurationVar(&s.defaultTTL, "default-ttl", d.DefaultTTL, "how long a message is kept for replay when a POST names no ttl")
	fs.DurationVar(&s.maxTTL, "max-ttl", d.MaxTTL, "the longest ttl a POST may ask for")
	fs.DurationVar(&s.pingInterval, "ping-interval", d.Edge.PingInterval, "how often each connection is pinged")
	fs.DurationVar(&s.idleTimeout, "idle-timeout", d.Edge.IdleTimeout, "close connections silent for this long")
	fs.Var(&s.writeQueueBytes, "write-queue-bytes", "per-connection queue `size` before a client is closed as a slow consumer")
	fs.Var(&s.sendBuffer, "socket-send-buffer", "cap each connection's kernel send buffer at this `size` (0: the kernel's default, which grows to megabytes for a client that does not read)")
	fs.DurationVar(&s.replayWindow, "replay-window", d.Edge.ReplayWindow, "for older clients that resume without seen=: replay also this much before their since")
	fs.IntVar(&s.replayWorkers, "replay-workers", d.Edge.ReplayWorkers, "store reads for replays that may run at once; more replaying clients wait their turn")
	fs.DurationVar(&s.replayRetryFor, "replay-retry-for", d.Edge.ReplayRetryFor, "while the store fails, how long a replay keeps retrying before it closes the connection (4005)")
	fs.DurationVar(&s.appendTimeout, "append-timeout", d.AppendTimeout, "how long a POST waits for the message store before it answers 503 (the write is then settled with the store)")
	fs.IntVar(&s.maxUnresolved, "max-unresolved", d.MaxUnresolved, "store writes that timed out and wait to be settled, held in memory; beyond it POSTs answer 503 store_unavailable")
	fs.IntVar(&s.maxSeen, "max-seen", d.Edge.MaxSeen, "most message IDs a client may list in seen= or a resume frame")
	fs.DurationVar(&s.resyncTimeout, "resync-timeout", d.Edge.ResyncTimeout, "how long a connection asked to resync has to answer before it is closed (4003)")
	fs.DurationVar(&s.drainTimeout, "drain-timeout", d.DrainTimeout, "on SIGTERM, how long to wait for clients to leave before stopping")
	fs.DurationVar(&s.drainSpread, "drain-spread", d.DrainSpread, "on SIGTERM, spread clients' reconnects over this window")
	fs.StringVar(&s.redisURL, "redis", "", "Redis `URL` for user bindings (redis://host:6379/0; a Cluster: ?addr=host2:6379&addr=...; Sentinel: ?master_name=NAME&addr=...); default: in memory, for a single node")
	fs.StringVar(&s.mongoURI, "mongo", "", "MongoDB `URI` for the message store (mongodb://host1,host2/?replicaSet=rs0); default: the embedded store in --data-dir")
	fs.StringVar(&s.mongoDatabase, "mongo-database", "herald", "MongoDB `database` for the message store")
	fs.StringVar(&s.mongoWC, "mongo-write-concern", "majority", "write `concern` a message must reach before POST answers 202: majority, or a number of members")
	fs.StringVar(&s.clusterSecret, "cluster-secret", "", "shared `secret` of the cluster: authenticates node-to-node RPC and encrypts gossip (default: generated into the data dir, a cluster of one)")
	fs.Var(&s.join, "join", "gossip `addresses` (host:port, comma-separated) of nodes to join; may include this node and nodes that are down")
	fs.StringVar(&s.gossipAddr, "gossip-addr", ":7946", "gossip `address` (TCP and UDP)")
	fs.StringVar(&s.gossipAdvertise, "gossip-advertise", "", "`IP` other nodes reach this one at, when the bind address is not it (default: the bind address, or the first private IP)")
	fs.StringVar(&s.rpcAddr, "rpc-addr", ":7947", "internal RPC `address` for node-to-node delivery; keep it off the public network")
	fs.StringVar(&s.publicURL, "public-url", "", "`URL` clients reach this node at, e.g. http://push1.example.com:8080, for steering and reconnect hints (default: http://<advertised host>:<port of --addr>)")
	fs.StringVar(&s.authURL, "auth-url", "", "remote auth service `URL` that verifies connection tokens (contract in docs/CLUSTER.md), instead of JWT")
	fs.StringVar(&s.authSecret, "auth-secret", "", "`secret` sent to --auth-url as Authorization: Bearer")
	fs.BoolVar(&s.standalone, "standalone", false, "run without gossip and internal RPC: one node that never has peers")
	fs.StringVar(&s.debugAddr, "debug-addr", "", "serve Go's pprof profiles (/debug/pprof/) on this private `address`, e.g. 127.0.0.1:6060; off by default")
	fs.StringVar(&s.logLevel, "log-level", "info", "`level`: debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "text", "`format`: text or json")
	s.chaosFlags(fs)
	fs.Usage = usage(fs, "Usage: herald serve [flags]\n\nRuns a Herald node. With no flags: every role in one process on :8080, messages in\n./herald-data, bindings in memory, and development secrets generated into ./herald-data.")
	return fs, s
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// serve runs a node until ctx ends (SIGTERM or SIGINT), then drains and
// shuts it down.
func serve(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs, s := serveFlags(stderr)
	if err := parseFlags(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, "herald serve:", err)
		return errUsage
	}
	log, err := newLogger(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	cfg, closeStores, err := s.nodeConfig(log)
	if err != nil {
		return err
	}
	startChaos, err := s.chaosNode(&cfg, log)
	if err != nil {
		closeStores()
		return err
	}
	n, err := node.New(cfg)
	if err != nil {
		closeStores()
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Shutdown(context.Background())
		return err
	}
	defer startChaos()()
	if s.debugAddr != "" {
		stopDebug, err := serveDebug(s.debugAddr, log)
		if err != nil {
			_ = n.Shutdown(context.Background())
			return err
		}
		defer stopDebug()
	}
	log.Info("herald is ready", "url", "http://"+displayAddr(n.Addr()), "websocket", "ws://"+displayAddr(n.Addr())+"/ws", "version", version())

	<-ctx.Done()
	log.Info("stopping: draining connections", "timeout", s.drainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), s.drainTimeout+5*time.Second)
	defer cancel()
	if err := n.Drain(drainCtx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	stopCtx, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel2()
	return n.Shutdown(stopCtx)
}

// nodeConfig turns the settings into a node.Config, opening the stores.
// closeStores releases them if the node is never built.
func (s *serveSettings) nodeConfig(log *slog.Logger) (node.Config, func(), error) {
	cfg := node.DefaultConfig()
	noop := func() {}
	roles, err := node.ParseRoles(s.roles)
	if err != nil {
		return cfg, noop, err
	}
	cfg.Roles = roles
	cfg.Addr = s.addr
	cfg.NodeID = s.nodeID
	if cfg.NodeID == "" {
		if cfg.NodeID, err = os.Hostname(); err != nil || cfg.NodeID == "" {
			cfg.NodeID = "herald"
		}
	}
	cfg.Logger = log
	cfg.MaxMessageBytes = int(s.maxMessageBytes)
	cfg.DefaultTTL, cfg.MaxTTL = s.defaultTTL, s.maxTTL
	cfg.DrainTimeout, cfg.DrainSpread = s.drainTimeout, s.drainSpread
	cfg.Edge.AllowedOrigins = s.allowedOrigins
	cfg.Edge.PingInterval, cfg.Edge.IdleTimeout = s.pingInterval, s.idleTimeout
	cfg.Edge.WriteQueueBytes = int(s.writeQueueBytes)
	cfg.Edge.SendBufferBytes = int(s.sendBuffer)
	cfg.Edge.ReplayWindow = s.replayWindow
	cfg.Edge.ReplayWorkers = s.replayWorkers
	cfg.Edge.ReplayRetryFor = s.replayRetryFor
	cfg.AppendTimeout = s.appendTimeout
	cfg.MaxUnresolved = s.maxUnresolved
	cfg.Edge.MaxSeen = s.maxSeen
	cfg.Edge.ResyncTimeout = s.resyncTimeout
	if err := cfg.Edge.Validate(); err != nil && !strings.Contains(err.Error(), "Auth is required") {
		return cfg, noop, err
	}

	cfg.Version = version()
	if err := s.clusterConfig(&cfg, log); err != nil {
		return cfg, noop, err
	}
	if cfg.Has(node.RoleAuth) || cfg.Has(node.RolePush) {
		a, err := s.authenticator(cfg, log)
		if err != nil {
			return cfg, noop, err
		}
		cfg.Auth = a
	}
	if cfg.Has(node.RoleCollect) {
		cfg.APIKeys = s.apiKeys
		if len(cfg.APIKeys) == 0 {
			key, created, err := auth.DevSecret(s.dataDir, auth.APIKeyFile)
			if err != nil {
				return cfg, noop, err
			}
			cfg.APIKeys = []string{key}
			log.Warn("development mode: no --api-key given; using the key in "+filepath.Join(s.dataDir, auth.APIKeyFile),
				"created", created)
		}
	}
	var closers []func() error
	closeAll := func() {
		for _, c := range closers {
			_ = c()
		}
	}
	if cfg.Has(node.RoleCollect) || cfg.Has(node.RolePush) {
		m, err := s.openMessages(log)
		if err != nil {
			return cfg, noop, err
		}
		cfg.Messages = m
		closers = append(closers, m.Close)
	}
	if cfg.Has(node.RolePush) || cfg.Has(node.RoleDispatch) {
		b, err := s.openBindings(log)
		if err != nil {
			closeAll()
			return cfg, noop, err
		}
		cfg.Bindings = b
		closers = append(closers, b.Close)
	}
	return cfg, closeAll, nil
}

// openMessages opens MongoDB with --mongo, else the embedded store.
func (s *serveSettings) openMessages(log *slog.Logger) (storage.Messages, error) {
	if s.mongoURI == "" {
		return embedded.Open(filepath.Join(s.dataDir, "messages"), embedded.Options{Logger: log})
	}
	mc := mongo.DefaultConfig()
	mc.URI, mc.Database, mc.WriteConcern = s.mongoURI, s.mongoDatabase, s.mongoWC
	s.chaosMongo(&mc)
	mc.Logger = log.With("part", "mongo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := mongo.New(ctx, mc)
	if err != nil {
		return nil, fmt.Errorf("mongo: %w", err)
	}
	return m, nil
}

// openBindings opens Redis with --redis, else in-memory bindings.
func (s *serveSettings) openBindings(log *slog.Logger) (storage.Bindings, error) {
	if s.redisURL == "" {
		return memory.NewBindings(nil), nil
	}
	rc := redis.DefaultConfig()
	rc.URL = s.redisURL
	rc.Logger = log.With("part", "redis")
	b, err := redis.New(rc)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return b, nil
}

// clusterConfig fills in the cluster settings.
func (s *serveSettings) clusterConfig(cfg *node.Config, log *slog.Logger) error {
	cfg.Standalone = s.standalone
	if s.standalone {
		return nil
	}
	secret := s.clusterSecret
	if secret == "" {
		var created bool
		var err error
		if secret, created, err = auth.DevSecret(s.dataDir, auth.ClusterSecretFile); err != nil {
			return err
		}
		log.Warn("development mode: no --cluster-secret given; using the one in "+filepath.Join(s.dataDir, auth.ClusterSecretFile)+
			"; every node of a cluster needs the same --cluster-secret", "created", created)
	}
	cfg.ClusterSecret = []byte(secret)
	host, port, err := net.SplitHostPort(s.gossipAddr)
	if err != nil {
		return fmt.Errorf("--gossip-addr %q: %w", s.gossipAddr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--gossip-addr %q: bad port", s.gossipAddr)
	}
	cfg.Gossip.BindAddr, cfg.Gossip.BindPort = host, p
	if cfg.Gossip.BindAddr == "" {
		cfg.Gossip.BindAddr = "0.0.0.0"
	}
	cfg.Gossip.AdvertiseAddr = s.gossipAdvertise
	cfg.Gossip.Seeds = s.join
	cfg.RPCAddr = s.rpcAddr
	cfg.PublicURL = strings.TrimSuffix(s.publicURL, "/")
	return nil
}

// authenticator builds the token verifier: the remote auth service with
// --auth-url; else JWT with the configured key or secret, generating a
// development secret on a node with the auth role; else nil, and a push
// node asks the cluster's auth nodes.
func (s *serveSettings) authenticator(cfg node.Config, log *slog.Logger) (node.Authenticator, error) {
	if s.authURL != "" {
		rc := auth.DefaultRemoteConfig()
		rc.URL, rc.Secret = s.authURL, s.authSecret
		return auth.NewRemote(rc)
	}
	if s.jwtPublicKey == "" && s.jwtSecret == "" && !cfg.Has(node.RoleAuth) && !cfg.Standalone {
		log.Info("no token verifier here: tokens are checked by the cluster's auth nodes")
		return nil, nil
	}
	jc := auth.JWTConfig{Issuer: s.jwtIssuer, Audience: s.jwtAudience, Leeway: 30 * time.Second}
	switch {
	case s.jwtPublicKey != "":
		pem, err := auth.LoadPublicKey(s.jwtPublicKey)
		if err != nil {
			return nil, err
		}
		jc.PublicKeyPEM = pem
	case s.jwtSecret != "":
		jc.Secret = []byte(s.jwtSecret)
	default:
		secret, created, err := auth.DevSecret(s.dataDir, auth.JWTSecretFile)
		if err != nil {
			return nil, err
		}
		jc.Secret = []byte(secret)
		log.Warn("development mode: no --jwt-secret given; using the secret in "+filepath.Join(s.dataDir, auth.JWTSecretFile)+
			"; mint tokens with: herald token --user alice", "created", created)
	}
	return auth.NewJWT(jc)
}

// displayAddr turns ":8080" or "[::]:8080" into "localhost:8080" for logs.
func displayAddr(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "localhost" + addr
	}
	if strings.HasPrefix(addr, "[::]:") {
		return "localhost" + strings.TrimPrefix(addr, "[::]")
	}
	if strings.HasPrefix(addr, "0.0.0.0:") {
		return "localhost" + strings.TrimPrefix(addr, "0.0.0.0")
	}
	return addr
}
