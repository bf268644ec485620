package gossip

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	t.Parallel()
	for _, m := range []Meta{
		testMeta("node-1", "9f86d081884c7d65"),
		{ID: "x", Incarnation: "1"},
		{ID: "dotted.id.example", Incarnation: "i", Roles: []string{RolePush}, State: "draining"},
		{ID: "ünïcode", Incarnation: "é", Roles: []string{RoleDispatch, RoleAuth}, PublicURL: "https://[::1]:8443"},
	} {
		b, err := m.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v): %v", m, err)
		}
		got, err := DecodeMeta(b)
		if err != nil {
			t.Fatalf("DecodeMeta: %v", err)
		}
		want := m
		want.Roles = canonicalRoles(m.Roles)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip: got %+v, want %+v", got, want)
		}
	}
}

func canonicalRoles(rs []string) []string {
	var out []string
	for _, r := range knownRoles() {
		for _, x := range rs {
			if x == r {
				out = append(out, r)
			}
		}
	}
	return out
}

func TestMetaTypicalSize(t *testing.T) {
	t.Parallel()
	m := Meta{
		ID: "herald-push-eu-west-1a-07", Incarnation: "9f86d081884c7d65",
		Roles:   []string{RoleAuth, RoleCollect, RoleDispatch, RolePush},
		RPCAddr: "10.12.134.201:7947", PublicURL: "https://push-07.eu-west-1.example.com:8443",
		Version: "v1.12.3-rc.1+abcdef0", State: "draining",
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("typical meta: %d bytes", len(b))
	if len(b) > 160 {
		t.Errorf("typical meta is %d bytes", len(b))
	}
}

func TestMetaSizeLimit(t *testing.T) {
	t.Parallel()
	m := Meta{ID: "a", Incarnation: "b"}
	base, _ := m.Encode()
	// Fill PublicURL to exactly the limit: its length prefix takes 2 bytes.
	m.PublicURL = strings.Repeat("u", MaxMetaBytes-len(base)-1)
	b, err := m.Encode()
	if err != nil || len(b) != MaxMetaBytes {
		t.Fatalf("at the limit: %d bytes, %v", len(b), err)
	}
	if _, err := DecodeMeta(b); err != nil {
		t.Fatalf("decode at the limit: %v", err)
	}
	m.PublicURL += "u"
	if _, err := m.Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("one over: %v, want ErrMetaTooLarge", err)
	}
	if err := m.Validate(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Validate one over: %v", err)
	}
	cfg := fastConfig("1", "a")
	cfg.Meta = m
	if _, err := New(cfg); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("New with too large meta: %v", err)
	}
	if _, err := DecodeMeta(append(b, 'x')); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("decode over the limit: %v", err)
	}
}

func TestMetaInvalid(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]Meta{
		"no id":            {Incarnation: "a"},
		"no incarnation":   {ID: "a"},
		"dot":              {ID: "a", Incarnation: "b.c"},
		"unknown role":     {ID: "a", Incarnation: "b", Roles: []string{"admin"}},
		"duplicate role":   {ID: "a", Incarnation: "b", Roles: []string{RolePush, RolePush}},
		"invalid utf-8":    {ID: "a\xff", Incarnation: "b"},
		"invalid utf-8 st": {ID: "a", Incarnation: "b", State: "\xc0"},
	} {
		if _, err := m.Encode(); !errors.Is(err, ErrInvalidMeta) {
			t.Errorf("%s: %v, want ErrInvalidMeta", name, err)
		}
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	t.Parallel()
	good, _ := testMeta("1", "a").Encode()
	for name, b := range map[string][]byte{
		"empty":         nil,
		"one byte":      {metaFormat},
		"format 0":      append([]byte{0}, good[1:]...),
		"format 2":      append([]byte{2}, good[1:]...),
		"truncated":     good[:len(good)-1],
		"huge length":   binary.AppendUvarint([]byte{metaFormat, 0}, 1<<62),
		"bad varint":    {metaFormat, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"empty id":      {metaFormat, 0, 0, 1, 'a', 0, 0, 0, 0},
		"json":          []byte(`{"id":"1","inc":"a"}`),
		"invalid utf-8": {metaFormat, 0, 1, 0xff, 1, 'a', 0, 0, 0, 0},
	} {
		if _, err := DecodeMeta(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestDecodeMetaForwardCompatible(t *testing.T) {
	t.Parallel()
	m := testMeta("1", "a")
	b, _ := m.Encode()
	b[1] |= 0xf0                          // roles of a newer version
	b = append(b, 3, 'n', 'e', 'w', 0x42) // fields of a newer version
	got, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("got %+v, want %+v", got, m)
	}
}

func TestHasRole(t *testing.T) {
	t.Parallel()
	m := Member{Meta: Meta{Roles: []string{RolePush, RoleAuth}}}
	if !m.HasRole(RolePush) || !m.HasRole("auth") || m.HasRole(RoleCollect) || m.HasRole("") {
		t.Errorf("HasRole wrong for %v", m.Roles)
	}
	if got := (Meta{ID: "a.b", Incarnation: "c"}).NodeName(); got != "a.b.c" {
		t.Errorf("NodeName = %q", got)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []Meta{testMeta("1", "a"), {ID: "x", Incarnation: "y"}} {
		b, _ := m.Encode()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{metaFormat, 0xff, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes is valid and survives a round trip.
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if len(enc) > len(b) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(b), len(enc))
		}
		m2, err := DecodeMeta(enc)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v -> %+v, %v", m, m2, err)
		}
	})
}
