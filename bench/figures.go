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
