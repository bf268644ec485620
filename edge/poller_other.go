//go:build unix && !linux

package edge

func newPoller(portable bool) (poller, error) { return newNetpollPoller(), nil }
