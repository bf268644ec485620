//go:build race

package chaos

// raceEnabled: the race detector slows the drill's 150 clients several
// times over, on the same cores as the cluster; .ci/test.sh runs the
// drill on its own, without it.
const raceEnabled = true
