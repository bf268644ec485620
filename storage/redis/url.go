package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// Default ports when an address in the URL has none.
const (
	defaultPort         = "6379"
	defaultSentinelPort = "26379"
)

// ParseURL turns a URL in the format described in the package documentation
// into go-redis options: Addrs, credentials, DB, TLS and, for the topology,
// MasterName (Sentinel) or IsClusterMode (Cluster). Timeouts and pool sizes
// are left zero; [New] fills them from [Config]. Errors wrap
// [ErrInvalidConfig] and never contain the password.
func ParseURL(raw string) (*goredis.UniversalOptions, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: url: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if raw == "" {
		return nil, bad("empty; want redis://[user:password@]host:port[/db]")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, bad("%v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, bad("scheme %q: want redis or rediss (TLS)", u.Scheme)
	}
	if u.Opaque != "" {
		return nil, bad("want %s://host:port", u.Scheme)
	}
	if u.Fragment != "" {
		return nil, bad("unexpected fragment #%s", u.Fragment)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, bad("query: %v", err)
	}
	single := func(name string) (string, error) {
		vs := q[name]
		delete(q, name)
		switch {
		case len(vs) == 0:
			return "", nil
		case len(vs) > 1:
			return "", bad("parameter %s given %d times", name, len(vs))
		case vs[0] == "":
			return "", bad("parameter %s is empty", name)
		}
		return vs[0], nil
	}

	o := &goredis.UniversalOptions{}
	if o.MasterName, err = single("master_name"); err != nil {
		return nil, err
	}
	if o.SentinelUsername, err = single("sentinel_username"); err != nil {
		return nil, err
	}
	if o.SentinelPassword, err = single("sentinel_password"); err != nil {
		return nil, err
	}
	if o.ClientName, err = single("client_name"); err != nil {
		return nil, err
	}
	cluster, err := single("cluster")
	if err != nil {
		return nil, err
	}
	switch cluster {
	case "", "false", "0":
	case "true", "1":
		o.IsClusterMode = true
	default:
		return nil, bad("parameter cluster=%q: want true or false", cluster)
	}
	extra := q["addr"]
	delete(q, "addr")
	if len(q) > 0 {
		names := make([]string, 0, len(q))
		for name := range q {
			names = append(names, name)
		}
		slices.Sort(names)
		return nil, bad("unknown parameter(s) %s; known: addr, master_name, cluster, "+
			"sentinel_username, sentinel_password, client_name", strings.Join(names, ", "))
	}

	port := defaultPort
	if o.MasterName != "" {
		port = defaultSentinelPort
	}
	hosts := extra
	if u.Host != "" {
		hosts = append([]string{u.Host}, extra...)
	}
	if len(hosts) == 0 {
		return nil, bad("no address: give host:port after %s:// or as addr= parameters", u.Scheme)
	}
	for _, h := range hosts {
		addr, err := normalizeAddr(h, port)
		if err != nil {
			return nil, bad("%v", err)
		}
		if !slices.Contains(o.Addrs, addr) {
			o.Addrs = append(o.Addrs, addr)
		}
	}

	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	switch db := strings.Trim(u.Path, "/"); {
	case db == "":
	case strings.Contains(db, "/"):
		return nil, bad("path %q: want /<db number>", u.Path)
	default:
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return nil, bad("database %q is not a number >= 0", db)
		}
		o.DB = n
	}

	switch {
	case o.MasterName != "" && o.IsClusterMode:
		return nil, bad("master_name (Sentinel) and cluster=true exclude each other")
	case o.MasterName == "" && (o.SentinelUsername != "" || o.SentinelPassword != ""):
		return nil, bad("sentinel_username and sentinel_password need master_name")
	case o.MasterName == "" && len(o.Addrs) > 1:
		o.IsClusterMode = true
	}
	if o.IsClusterMode && o.DB != 0 {
		return nil, bad("Redis Cluster has only database 0, URL selects %d", o.DB)
	}
	if u.Scheme == "rediss" {
		// ServerName stays empty: crypto/tls takes it from each address
		// dialled, which is right for every node of a cluster.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// normalizeAddr checks host[:port] and adds port when it has none.
func normalizeAddr(hostport, port string) (string, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: a bare host name, IPv4 address or [IPv6] address.
		host, p = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), port
		if strings.ContainsAny(host, "[]/") || (strings.Contains(host, ":") && !strings.HasPrefix(hostport, "[")) {
			return "", fmt.Errorf("address %q: want host:port", hostport)
		}
	}
	if host == "" {
		return "", fmt.Errorf("address %q has no host", hostport)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q: port %q is not a number within 1..65535", hostport, p)
	}
	return net.JoinHostPort(host, p), nil
}
