//go:build unix

package edge

import (
	"net"

	"golang.org/x/sys/unix"
)

// Non-blocking system calls on a connection's socket. The caller holds the
// Conn's mutex and has checked it is not closed.

func sysRead(fd int, p []byte) (int, error) {
	n, err := unix.Read(fd, p)
	if n < 0 {
		n = 0
	}
	return n, err
}

func sysWrite(fd int, p []byte) (int, error) {
	n, err := unix.Write(fd, p)
	if n < 0 {
		n = 0
	}
	return n, err
}

// sysWritev writes bufs, the first from offset off, in one call.
func sysWritev(fd int, bufs [][]byte, off int) (int, error) {
	const maxIov = 64
	iov := make([][]byte, 0, min(len(bufs), maxIov))
	iov = append(iov, bufs[0][off:])
	for _, b := range bufs[1:] {
		if len(iov) == maxIov {
			break
		}
		iov = append(iov, b)
	}
	n, err := unix.Writev(fd, iov)
	if n < 0 {
		n = 0
	}
	return n, err
}

func sysShutdownWrite(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) }

func sysClose(fd int) error { return unix.Close(fd) }

// sysPeerAddr returns the socket's peer address, or nil.
func sysPeerAddr(fd int) net.Addr {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return nil
}

// sysSetSendBuffer caps the kernel's send buffer of a socket.
func sysSetSendBuffer(fd, n int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
}
