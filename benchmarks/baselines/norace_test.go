//go:build !race

package baselines_test

const raceEnabled = false
