package resume

import (
	"slices"
	"testing"
)

func TestCursorPrunesSeen(t *testing.T) {
	s := New("")
	if q := s.Query(); len(q) != 0 {
		t.Fatalf("a new client sends %v", q)
	}
	s.Ready("c10")
	if !s.Message("c12", "c10") || !s.Message("c11", "c10") {
		t.Fatal("new messages taken for repeats")
	}
	if s.Message("c12", "") {
		t.Fatal("a repeat taken for new")
	}
	if got := s.Seen(); !slices.Equal(got, []string{"c12", "c11"}) {
		t.Fatalf("seen %v", got)
	}
	s.Message("c13", "c11") // the cursor passes c11
	if got := s.Seen(); !slices.Equal(got, []string{"c12", "c13"}) || s.Cursor() != "c11" {
		t.Fatalf("after the cursor moved: cursor %s seen %v", s.Cursor(), got)
	}
	s.Ready("c09") // an older cursor changes nothing
	if q := s.Query(); q.Get("since") != "c11" || q.Get("seen") != "c12,c13" {
		t.Fatalf("query %v", q)
	}
	if r := s.Resume(); r.Type != "resume" || r.Since != "c11" || !slices.Equal(r.Seen, []string{"c12", "c13"}) {
		t.Fatalf("resume %+v", r)
	}
}

func TestSeenBoundedAndRepeatsRemembered(t *testing.T) {
	s := New("a")
	for i := range 300 {
		s.Message(id(i), "")
	}
	if q := s.Query(); len(s.Seen()) != 300 || len(splitSeen(q.Get("seen"))) != MaxSeen || splitSeen(q.Get("seen"))[0] != id(200) {
		t.Fatalf("seen %d, sent %d starting %v", len(s.Seen()), len(splitSeen(q.Get("seen"))), splitSeen(q.Get("seen"))[:1])
	}
	if s.Message(id(5), "") {
		t.Fatal("a repeat of a remembered ID taken for new")
	}
	for i := 300; i < 300+remember; i++ {
		s.Message(id(i), "")
	}
	if !s.Message(id(5), "") {
		t.Fatal("an ID older than the memory is still taken for a repeat")
	}
}

func id(i int) string {
	return "b" + string(rune('a'+i/676%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
}

func splitSeen(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
