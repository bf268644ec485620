package node

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/storage"
)

func FuzzDecodePost(f *testing.F) {
	for _, s := range []string{
		`{"to":["alice","bob"],"data":{"x":1},"ttl":"1h","key":"k"}`,
		`{"broadcast":true,"data":"hi"}`,
		`{"to":["a","a"],"data":null}`,
		`{"to":[],"data":1}`,
		`{"to":["*"],"data":1}`,
		`{"to":["a"],"data":1,"ttl":"-5s"}`,
		`{"to":["a"],"data":1} x`,
		"{\"to\":[\"\xff\"],\"data\":1}",
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	lim := postLimits{maxData: 1024, defaultTTL: time.Hour, maxTTL: 48 * time.Hour}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, aerr := decodePost(body, lim)
		if aerr != nil {
			if aerr.Status < 400 || aerr.Status > 499 || aerr.Code == "" || aerr.Message == "" {
				t.Fatalf("bad error %+v", aerr)
			}
			return
		}
		// Whatever is accepted must be storable: the store's own
		// validation agrees with the API's.
		m := &storage.Message{ID: storage.IDAt(time.Now()), To: p.to, Broadcast: p.broadcast, Data: p.data,
			Key: p.key, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(p.ttl)}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted %q but the store would refuse it: %v", body, err)
		}
		if !utf8.Valid(body) || !json.Valid(p.data) || len(p.data) > lim.maxData {
			t.Fatalf("accepted %q", body)
		}
		if p.ttl < time.Second || p.ttl > lim.maxTTL {
			t.Fatalf("ttl %v accepted", p.ttl)
		}
		seen := map[string]bool{}
		for _, u := range p.to {
			if seen[u] {
				t.Fatalf("recipient %q twice", u)
			}
			seen[u] = true
		}
	})
}
