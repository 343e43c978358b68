package cluster

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"
)

// TestProcessCPU checks the /proc reading against getrusage for this
// process, after burning enough CPU that a wrong field (the children's
// times, the start time) could not pass for it.
func TestProcessCPU(t *testing.T) {
	self := os.Getpid()
	start, err := ProcessCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		now, err := ProcessCPU(self)
		if err != nil {
			t.Fatal(err)
		}
		if now-start >= 200*time.Millisecond {
			break
		}
		for range 16 {
			sha256.Sum256(buf)
		}
	}
	got, err := ProcessCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ProcessCPU(0) // getrusage
	if err != nil {
		t.Fatal(err)
	}
	// The kernel keeps both from the same counters; /proc rounds down to
	// ticks, and getrusage ran a moment later.
	if d := want - got; d < 0 || d > 50*time.Millisecond {
		t.Fatalf("ProcessCPU = %v, getrusage = %v", got, want)
	}
	if _, err := ProcessCPU(1 << 30); err == nil {
		t.Fatal("ProcessCPU of a process that does not exist: no error")
	}
}
