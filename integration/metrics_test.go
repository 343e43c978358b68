package integration

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshfs/meshfs/integration/cluster"
)

// scrape reads one sample of a daemon's /metrics, by its full name with
// labels as Prometheus prints them; absent is -1.
func scrape(t *testing.T, d *daemon, sample string) float64 {
	t.Helper()
	v, err := cluster.Metric(http.DefaultClient, d.API, sample)
	if errors.Is(err, cluster.ErrNoMetric) {
		return -1
	}
	if err != nil {
		t.Fatalf("metric %s: %v", sample, err)
	}
	return v
}

// The metrics a user would watch are there and move with a transfer.
func TestMetricsMoveWithATransfer(t *testing.T) {
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	b := startDaemon(t, filepath.Join(tmp, "b"), "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	path := writeRandomFile(t, tmp, 3<<20, 5)
	id := a.upload(t, path)

	received := `meshfs_exchange_total{event="block_received"}`
	if v := scrape(t, b, received); v != 0 {
		t.Fatalf("%s before any transfer = %v, want 0", received, v)
	}
	if v := scrape(t, a, `meshfs_store_bytes{kind="used"}`); v <= 3<<20 {
		t.Errorf("A's store used bytes %v after a 3 MiB upload", v)
	}
	got := filepath.Join(tmp, "got")
	if r := b.meshfs(t, "download", id, "-o", got); r.code != 0 {
		t.Fatalf("download: %s", r.stderr)
	}
	must(t, "cmp", got, path)

	// meshfs status on B names A as its peer, and B's fetch once started.
	resp, err := http.Post(b.API+"/api/codex/v1/data/"+id+"/network", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st := b.meshfs(t, "status")
	aID := strings.TrimSpace(must(t, bin, "id", "--api", a.API))
	if st.code != 0 || !strings.Contains(st.stdout, "peers:") || !strings.Contains(st.stdout, id) ||
		!strings.Contains(aID, strings.Fields(strings.SplitN(st.stdout, "peers:", 2)[1])[1]) {
		t.Errorf("meshfs status on B (A is %s):\n%s%s", aID, st.stdout, st.stderr)
	}

	for _, m := range []struct {
		d      *daemon
		sample string
		min    float64
	}{
		{b, received, 48}, // 3 MiB of 64 KiB blocks
		{b, `meshfs_exchange_total{event="byte_received"}`, 3 << 20},
		{b, `meshfs_exchange_total{event="want_block_sent"}`, 48},
		{b, `meshfs_exchange_want_latency_seconds_count`, 48},
		{b, `meshfs_read_cache_total{result="miss"}`, 1},
		{b, `meshfs_peers`, 1},
		{a, `meshfs_exchange_total{event="block_sent"}`, 48},
		{a, `meshfs_exchange_total{event="byte_sent"}`, 3 << 20},
	} {
		if v := scrape(t, m.d, m.sample); v < m.min {
			t.Errorf("%s = %v after the transfer, want at least %v", m.sample, v, m.min)
		}
	}
}
