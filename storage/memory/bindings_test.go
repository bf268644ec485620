package memory

import (
	"testing"

	"github.com/heraldpush/herald/storage"
	"github.com/heraldpush/herald/storage/storagetest"
)

func TestBindingsConformance(t *testing.T) {
	storagetest.RunBindings(t, storagetest.BindingsFactory{
		New: func(t testing.TB) storage.Bindings {
			b := NewBindings(nil)
			t.Cleanup(func() { b.Close() })
			return b
		},
	})
}

func BenchmarkLookup_1000Users(b *testing.B) {
	storagetest.BenchLookup1000(b, NewBindings(nil))
}

func BenchmarkBind_1000Users(b *testing.B) {
	storagetest.BenchBind1000(b, NewBindings(nil))
}
