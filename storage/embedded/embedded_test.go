package embedded

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/storagetest"
)

func open(t testing.TB, dir string) *Messages {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMessagesConformance(t *testing.T) {
	var mu sync.Mutex
	dirs := map[storage.Messages]string{}
	storagetest.RunMessages(t, storagetest.MessagesFactory{
		New: func(t testing.TB) storage.Messages {
			dir := filepath.Join(t.TempDir(), "db")
			s := open(t, dir)
			mu.Lock()
			dirs[s] = dir
			mu.Unlock()
			return s
		},
		Reopen: func(t testing.TB, s storage.Messages) storage.Messages {
			mu.Lock()
			dir := dirs[s]
			mu.Unlock()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dir)
		},
	})
}

func TestDecodeRejectsCorruptRecords(t *testing.T) {
	t.Parallel()
	g := storagetest.NewGen()
	m := g.Msg(3600e9, "alice", "bob")
	m.Key = "k"
	rec := encode(m)
	got, err := decode(m.ID, rec)
	if err != nil || got.Key != "k" || len(got.To) != 2 || string(got.Data) != string(m.Data) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := 0; i < len(rec)-len(m.Data); i++ {
		if _, err := decode(m.ID, rec[:i]); err == nil {
			t.Fatalf("truncated record of %d bytes decoded", i)
		}
	}
}

func BenchmarkAppend_1Recipient(b *testing.B) {
	storagetest.BenchAppend1Recipient(b, open(b, b.TempDir()))
}

func BenchmarkAppend_1000Recipients(b *testing.B) {
	storagetest.BenchAppend1000Recipients(b, open(b, b.TempDir()))
}

func BenchmarkReplay_100(b *testing.B) {
	storagetest.BenchReplay100(b, open(b, b.TempDir()))
}
