package mongo_test

import (
	"testing"

	"github.com/heraldpush/herald/storage/storagetest"
)

// The benchmarks run against the shared server: embedded FerretDB (SQLite),
// or the MongoDB named by HERALD_TEST_MONGO_URI. FerretDB figures measure
// this package plus FerretDB, not what a real MongoDB would do.

func BenchmarkAppend_1000Recipients(b *testing.B) {
	storagetest.BenchAppend1000Recipients(b, newShared(b))
}

func BenchmarkAppend_1Recipient(b *testing.B) {
	storagetest.BenchAppend1Recipient(b, newShared(b))
}

func BenchmarkReplay_100(b *testing.B) {
	storagetest.BenchReplay100(b, newShared(b))
}
