package testkit

import (
	"syscall"
	"testing"
	"time"
)

// CPUClock is a benchmark's timer that also counts the CPU time the
// process uses while it runs, user and system. On a shared machine the
// wall-clock figure moves with the neighbours' load; the CPU spent per byte
// much less, so it is the figure to compare changes by. Where both ends of
// a transfer run in the benchmark's process, it is the whole transfer's
// cost.
type CPUClock struct {
	b       *testing.B
	cpu     time.Duration
	startAt time.Duration
}

// StartCPUClock resets b's timer and starts both clocks.
func StartCPUClock(b *testing.B) *CPUClock {
	c := &CPUClock{b: b}
	b.ResetTimer()
	c.Start()
	return c
}

// Start and Stop run and pause both clocks, like b.StartTimer and
// b.StopTimer.
func (c *CPUClock) Start() { c.b.StartTimer(); c.startAt = processCPU() }
func (c *CPUClock) Stop()  { c.cpu += processCPU() - c.startAt; c.b.StopTimer() }

// Report stops the clocks and adds CPU milliseconds per MiB to the
// benchmark's figures, each op having moved mibPerOp.
func (c *CPUClock) Report(mibPerOp float64) {
	c.Stop()
	c.b.ReportMetric(float64(c.cpu)/float64(time.Millisecond)/(mibPerOp*float64(c.b.N)), "cpu-ms/MiB")
}

// processCPU is this process's CPU time, user and system; getrusage on
// oneself does not fail short of a broken kernel, so a failure reads as no
// time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
