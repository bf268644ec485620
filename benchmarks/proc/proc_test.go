package proc

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSelf reads this process: its RSS grows when it touches memory, and
// its CPU time grows when it computes.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	before, err := RSS(pid)
	if err != nil || before <= 0 {
		t.Fatalf("RSS = %d, %v", before, err)
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	after, err := RSS(pid)
	if err != nil || after < before+32<<20 {
		t.Fatalf("RSS after touching 64 MiB: %d -> %d, %v", before, after, err)
	}
	settled, err := SettledRSS(pid, 5*time.Second)
	if err != nil || settled < before+32<<20 {
		t.Fatalf("SettledRSS = %d, %v", settled, err)
	}
	_ = buf[len(buf)-1]

	cpu0, err := CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cpu, err := CPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if cpu >= cpu0+50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU stayed at %v (from %v) while spinning", cpu, cpu0)
		}
	}
}

func TestKernelMemory(t *testing.T) {
	before, err := KernelMemory()
	if err != nil || before <= 0 {
		t.Fatalf("KernelMemory = %d, %v", before, err)
	}
	// A few thousand open files take kernel memory.
	var files []*os.File
	t.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
	})
	for range 2000 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, r, w)
	}
	after, err := KernelMemory()
	if err != nil || after <= before {
		t.Fatalf("kernel memory %d -> %d after opening 4,000 files, %v", before, after, err)
	}
}

func TestMissingProcess(t *testing.T) {
	if _, err := RSS(1 << 30); err == nil {
		t.Fatal("RSS of a process that does not exist")
	}
	if _, err := CPU(1 << 30); err == nil {
		t.Fatal("CPU of a process that does not exist")
	}
}

func TestRaiseFileLimit(t *testing.T) {
	n, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if l.Cur != l.Max || n != l.Cur {
		t.Fatalf("limit %d of %d (returned %d), want the hard limit", l.Cur, l.Max, n)
	}
}
