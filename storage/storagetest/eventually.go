package storagetest

import (
	"testing"
	"time"
)

// Eventually calls cond until it returns nil or timeout passes, and then
// fails the test with cond's last error. It polls with a short, growing
// interval: tests wait on conditions, never on fixed sleeps.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}
