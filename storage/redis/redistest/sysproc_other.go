//go:build !linux

package redistest

import "syscall"

// sysProcAttr: only Linux has a parent-death signal; elsewhere servers are
// stopped by t.Cleanup and Main alone.
func sysProcAttr() *syscall.SysProcAttr { return nil }
