//go:build race

package ring

// raceEnabled: the race detector slows consistent.New about tenfold, so
// the movement test runs fewer trials under it.
const raceEnabled = true
