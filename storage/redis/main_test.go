package redis

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/storage/redis/redistest"
)

// TestMain stops the shared redis-server after the tests and then checks
// that no goroutine (of go-redis or ours) outlived its client.
func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Main(m)) }
