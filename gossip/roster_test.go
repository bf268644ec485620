package gossip

import (
	"reflect"
	"testing"
)

func ev(t EventType, name, state string) Event {
	id, inc := name[:1], name[2:]
	m := testMeta(id, inc)
	m.State = state
	return Event{Type: t, Member: Member{Meta: m, Addr: "127.0.0.1:1"}}
}

type step struct {
	ev     Event
	merged bool
}

func summary(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type.String()+" "+e.Member.NodeName()+" "+e.Member.State)
	}
	return out
}

func TestRosterCoalescing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		known []string // joined and delivered before the steps
		steps []step
		want  []string
		live  int
	}{
		{"updates keep the latest", nil, []step{
			{ev(Join, "a.1", "running"), false},
			{ev(Update, "b.1", "s1"), false},
			{ev(Update, "b.1", "s2"), true},
			{ev(Update, "b.1", "s3"), true},
		}, []string{"join a.1 running", "update b.1 s3"}, 2},
		{"update folds into join", nil, []step{
			{ev(Join, "a.1", "running"), false},
			{ev(Join, "b.1", "running"), false},
			{ev(Update, "a.1", "draining"), true},
		}, []string{"join a.1 draining", "join b.1 running"}, 2},
		{"leave replaces update", []string{"a.1"}, []step{
			{ev(Update, "a.1", "draining"), false},
			{ev(Join, "b.1", "running"), false},
			{ev(Leave, "a.1", "draining"), true},
		}, []string{"leave a.1 draining", "join b.1 running"}, 1},
		{"join then leave keeps both", nil, []step{
			{ev(Join, "a.1", "running"), false},
			{ev(Leave, "a.1", "running"), false},
			{ev(Join, "a.1", "running"), false},
			{ev(Update, "a.1", "x"), true},
		}, []string{"join a.1 running", "leave a.1 running", "join a.1 x"}, 1},
		{"incarnations are separate members", nil, []step{
			{ev(Join, "a.1", "running"), false},
			{ev(Join, "a.2", "running"), false},
			{ev(Update, "a.1", "draining"), true},
			{ev(Leave, "a.1", "draining"), false},
		}, []string{"join a.1 draining", "join a.2 running", "leave a.1 draining"}, 1},
		{"leave of an unknown member is dropped", nil, []step{
			{ev(Leave, "z.1", "running"), false},
		}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRoster()
			for _, name := range tc.known {
				r.apply(name, ev(Join, name, "old"), true)
			}
			r.take()
			for i, s := range tc.steps {
				_, merged, _ := r.apply(s.ev.Member.NodeName(), s.ev, true)
				if merged != s.merged {
					t.Errorf("step %d: merged = %v", i, merged)
				}
			}
			if got := summary(r.take()); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("queue = %q, want %q", got, tc.want)
			}
			if got := len(r.list()); got != tc.live {
				t.Errorf("%d live members, want %d", got, tc.live)
			}
			if r.take() != nil {
				t.Error("take after take not empty")
			}
		})
	}
}

func TestRosterLeaveWithoutMeta(t *testing.T) {
	t.Parallel()
	r := newRoster()
	r.apply("a.1", ev(Join, "a.1", "running"), true)
	r.take()
	count, _, ok := r.apply("a.1", Event{Type: Leave}, false)
	if !ok || count != 0 {
		t.Fatalf("leave: ok %v count %d", ok, count)
	}
	got := r.take()
	if len(got) != 1 || got[0].Member.NodeName() != "a.1" || got[0].Member.State != "running" {
		t.Errorf("leave without meta: %+v", got)
	}
}

func TestRosterCopies(t *testing.T) {
	t.Parallel()
	r := newRoster()
	r.apply("a.1", ev(Join, "a.1", "running"), true)
	q := r.take()
	q[0].Member.Roles[0] = "mutated"
	l := r.list()
	if l[0].Roles[0] == "mutated" {
		t.Error("an event shares Roles with the roster")
	}
	l[0].Roles[1] = "mutated"
	if r.list()[0].Roles[1] == "mutated" {
		t.Error("Members shares Roles with the roster")
	}
}
