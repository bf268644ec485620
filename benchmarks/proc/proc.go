package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RSS returns the resident set size of process pid, in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// clockTicks is USER_HZ, 100 on every Linux the tool targets.
const clockTicks = 100

// CPU returns the user plus system CPU time process pid has used.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad stat for pid %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat for pid %d", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad stat times for pid %d", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// RaiseFileLimit sets this process's soft open-file limit to its hard
// limit (children inherit it) and returns the new limit.
func RaiseFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}

// SettledRSS samples pid's RSS until it stops moving (three readings
// 200 ms apart within 1%) or timeout passes, and returns the last reading.
func SettledRSS(pid int, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	var prev []int64
	for {
		v, err := RSS(pid)
		if err != nil {
			return 0, err
		}
		prev = append(prev, v)
		if n := len(prev); n >= 3 {
			lo, hi := prev[n-3], prev[n-3]
			for _, x := range prev[n-3:] {
				lo, hi = min(lo, x), max(hi, x)
			}
			if float64(hi-lo) <= 0.01*float64(hi) || time.Now().After(deadline) {
				return v, nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// KernelMemory returns the machine's kernel slab memory (Slab in
// /proc/meminfo) in bytes: where the kernel keeps sockets, files and
// epoll entries, which no process's RSS shows.
func KernelMemory() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "Slab:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no Slab in /proc/meminfo")
}
