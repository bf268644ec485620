package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the test binary dies,
// even by SIGKILL or a test timeout, so no server outlives its tests.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
