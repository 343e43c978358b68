package main

import (
	"fmt"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// How the bench's rows print their figures.

// cpuPerMiB is CPU time per MiB moved, in milliseconds.
func cpuPerMiB(cpu time.Duration, n int64) string {
	return msString(time.Duration(float64(cpu) / (float64(n) / (1 << 20))))
}

func msString(d time.Duration) string { return fmt.Sprintf("%.2f ms", ms(d)) }

// usString is a latency to the nearest 10 µs.
func usString(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }

// processCPUs reads the CPU time used so far by each process (0: this one).
func processCPUs(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		var err error
		if out[i], err = cluster.ProcessCPU(pid); err != nil {
			return nil, fmt.Errorf("CPU time of process %d: %w", pid, err)
		}
	}
	return out, nil
}

func mbps(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MB/s", float64(n)/d.Seconds()/1e6)
}

// ratio is how fast `took` was against `base` (both for the same bytes).
func ratio(base, took time.Duration) string {
	return fmt.Sprintf("%.2f", base.Seconds()/took.Seconds())
}

// machineUse is what the whole machine spent while something ran.
type machineUse struct{ busy, idle time.Duration }

// during runs f and records the machine's busy and idle CPU time over it.
func (u *machineUse) during(f func() error) (time.Duration, error) {
	busy0, idle0, err := cluster.MachineCPU()
	if err != nil {
		return 0, err
	}
	took, err := timed(f)
	if err != nil {
		return took, err
	}
	busy1, idle1, err := cluster.MachineCPU()
	if err != nil {
		return took, err
	}
	u.busy, u.idle = busy1-busy0, idle1-idle0
	return took, nil
}

// idleShare is the part of the cores' time left idle.
func (u *machineUse) idleShare() string {
	if u.busy+u.idle <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", 100*u.idle.Seconds()/(u.busy+u.idle).Seconds())
}
