package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A read under --bwlimit-down on the reader, or --bwlimit-up on the
// provider, completes, and no faster than the limit allows (with half as
// much again of slack: the figure itself is the bench's). status says the
// limits.
func TestBandwidthLimits(t *testing.T) {
	t.Parallel()
	const size, limit = 6 << 20, 2 << 20 // 3 s at the limit
	for _, tc := range []struct {
		name           string
		provider, user []string
		status         string
	}{
		{"down", nil, []string{"--bwlimit-down", "2MiB"}, "bandwidth: up unlimited, down 2.0 MiB/s"},
		{"up", []string{"--bwlimit-up", "2MiB"}, nil, "bandwidth: up unlimited, down unlimited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			a := startDaemon(t, filepath.Join(tmp, "a"), "", append([]string{"--listen", "/ip4/127.0.0.1/tcp/0"}, tc.provider...)...)
			b := startDaemon(t, filepath.Join(tmp, "b"), "", append([]string{"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a.p2pAddr(t)}, tc.user...)...)
			path := writeRandomFile(t, tmp, size, 2026)
			c := a.upload(t, path)
			got := filepath.Join(tmp, "got")
			start := time.Now()
			if r := b.meshfs(t, "download", c, "-o", got); r.code != 0 {
				t.Fatalf("download under a limit: exit %d: %s", r.code, r.stderr)
			}
			took := time.Since(start)
			must(t, "cmp", got, path)
			// Parity is not read: the file's bytes are what crossed.
			rate := float64(size) / took.Seconds()
			t.Logf("%d MiB in %s: %.2f MiB/s under a limit of 2 MiB/s", size>>20, took.Round(time.Millisecond), rate/(1<<20))
			if rate > 1.5*limit {
				t.Fatalf("read at %.2f MiB/s under a limit of 2 MiB/s", rate/(1<<20))
			}
			if r := b.meshfs(t, "status"); r.code != 0 || !strings.Contains(strings.Join(strings.Fields(r.stdout), " "), tc.status) {
				t.Fatalf("status: exit %d:\n%s\nwant a line %q", r.code, r.stdout, tc.status)
			}
		})
	}
}
