package redis

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	type want struct {
		addrs      []string
		cluster    bool
		master     string
		user, pass string
		db         int
		tls        bool
	}
	for _, tc := range []struct {
		url  string
		want want
	}{
		{"redis://127.0.0.1:6379", want{addrs: []string{"127.0.0.1:6379"}}},
		{"redis://localhost", want{addrs: []string{"localhost:6379"}}},
		{"redis://:s3cret@redis.internal:7000/3", want{addrs: []string{"redis.internal:7000"}, pass: "s3cret", db: 3}},
		{"redis://herald:pw@[::1]:6380/", want{addrs: []string{"[::1]:6380"}, user: "herald", pass: "pw"}},
		{"rediss://cache.example.com:6380", want{addrs: []string{"cache.example.com:6380"}, tls: true}},
		// Cluster: several addresses, the URL's host among them.
		{"redis://10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000",
			want{addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}, cluster: true}},
		{"rediss://u:p@?addr=a:7000&addr=b:7001",
			want{addrs: []string{"a:7000", "b:7001"}, cluster: true, user: "u", pass: "p", tls: true}},
		{"redis://seed.example:7000?cluster=true", want{addrs: []string{"seed.example:7000"}, cluster: true}},
		{"redis://a:7000?addr=a:7000", want{addrs: []string{"a:7000"}}}, // duplicates collapse
		// Sentinel: hosts are sentinels (default port 26379), the
		// credentials and db are the master's.
		{"redis://:masterpw@s1/2?master_name=mymaster&addr=s2:26380&addr=s3&sentinel_password=sp",
			want{addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, master: "mymaster", pass: "masterpw", db: 2}},
	} {
		o, err := ParseURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		got := want{
			addrs: o.Addrs, cluster: o.IsClusterMode, master: o.MasterName,
			user: o.Username, pass: o.Password, db: o.DB, tls: o.TLSConfig != nil,
		}
		if !slices.Equal(got.addrs, tc.want.addrs) || got.cluster != tc.want.cluster || got.master != tc.want.master ||
			got.user != tc.want.user || got.pass != tc.want.pass || got.db != tc.want.db || got.tls != tc.want.tls {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.url, got, tc.want)
		}
	}

	o, err := ParseURL("redis://s1?master_name=m&sentinel_username=su&sentinel_password=sp&client_name=herald-1")
	if err != nil {
		t.Fatal(err)
	}
	if o.SentinelUsername != "su" || o.SentinelPassword != "sp" || o.ClientName != "herald-1" {
		t.Errorf("sentinel credentials and client name: %+v", o)
	}
	o, err = ParseURL("rediss://h:1")
	if err != nil {
		t.Fatal(err)
	}
	if o.TLSConfig.ServerName != "" || o.TLSConfig.InsecureSkipVerify || o.TLSConfig.MinVersion == 0 {
		t.Errorf("TLS config: %+v", o.TLSConfig)
	}
}

func TestParseURLErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, says string }{
		{"", "empty"},
		{"localhost:6379", "scheme"},
		{"http://localhost", "scheme"},
		{"redis:localhost:6379", "redis://host:port"},
		{"redis://", "no address"},
		{"redis://h:0", "port"},
		{"redis://h:99999", "port"},
		{"redis://h:6379/x", "database"},
		{"redis://h:6379/-1", "database"},
		{"redis://h:6379/1/2", "path"},
		{"redis://h?addr=", "has no host"},
		{"redis://h?addr=h2:x", `port "x"`},
		{"redis://h?addr=::1", "want host:port"},
		{"redis://h?timeout=1s", "unknown parameter(s) timeout"},
		{"redis://h?master_name=", "master_name is empty"},
		{"redis://h?master_name=a&master_name=b", "given 2 times"},
		{"redis://h?master_name=m&cluster=true", "exclude"},
		{"redis://h?sentinel_password=x", "need master_name"},
		{"redis://h?cluster=maybe", "cluster"},
		{"redis://a:1/2?addr=b:1", "only database 0"},
		{"redis://h#frag", "fragment"},
		{"redis://h?%zz", "query"},
	} {
		_, err := ParseURL(tc.url)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseURL(%q) = %v, want ErrInvalidConfig saying %q", tc.url, err, tc.says)
		}
	}
}

// A URL error must not echo the password (url.Parse's own errors would).
func TestParseURLHidesPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://user:hunter2@host:port",
		"redis://user:hunter2@host:1/x",
		"redis://user:hunter2@host:1?bogus=1",
		"redis://user:hunter2@ho st:1",
	} {
		_, err := ParseURL(u)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURL(%q) = %v", u, err)
		}
	}
}
