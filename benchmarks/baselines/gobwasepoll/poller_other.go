//go:build !linux

package gobwasepoll

import (
	"errors"
	"log/slog"
	"net"
)

var errNotLinux = errors.New("gobwasepoll: the epoll baseline runs on linux only")

type poller struct{}

func newPoller(*slog.Logger) (*poller, error) { return nil, errNotLinux }

func fdOf(net.Conn) (int, error)    { return 0, errNotLinux }
func (p *poller) add(*conn) error   { return errNotLinux }
func (p *poller) rearm(*conn) error { return errNotLinux }
func (p *poller) remove(*conn)      {}
func (p *poller) run(func(*conn))   {}
func (p *poller) close()            {}
