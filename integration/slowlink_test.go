package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshfs/meshfs/integration/cluster"
)

// A provider behind a slow uplink, as home lines are, is read to the end
// at whatever rate the line allows: the bytes are identical and the
// reader never drops its only provider for being slow. (The rates reached
// are the bench's to measure, not this test's.)
func TestSlowUplinks(t *testing.T) {
	for _, tc := range []struct {
		rate string
		size int64
	}{
		{"1mbit", 8 << 20},
		{"256kbit", 2 << 20},
		{"128kbit", 1 << 20},
	} {
		t.Run(tc.rate, func(t *testing.T) {
			t.Parallel()
			na, nb := newLink(t, tc.rate)
			tmp := t.TempDir()
			a := startDaemonUnder(t, na.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/198.18.0.1/tcp/4001")
			path := writeRandomFile(t, tmp, tc.size, 1900)
			c := a.upload(t, path)
			b := startDaemonUnder(t, nb.Exec(), filepath.Join(tmp, "b"), "", "--listen", "/ip4/198.18.0.2/tcp/4001",
				"--bootstrap", a.p2pAddr(t))
			got := filepath.Join(tmp, "got")
			if r := b.meshfs(t, "download", c, "-o", got); r.code != 0 {
				t.Fatalf("download of %d bytes from a provider behind %s: exit %d: %s", tc.size, tc.rate, r.code, r.stderr)
			}
			must(t, "cmp", got, path)
			if n := exchangeEvents(t, nb.HTTPClient(), b)["peer_dropped"]; n != 0 {
				t.Errorf("the reader dropped %d peers; its only provider is slow, not hostile", n)
			}
			if strings.Contains(b.Logs(), "dropping peer") {
				t.Errorf("the reader's log says it dropped a peer")
			}
		})
	}
}

// exchangeEvents reads the daemon's meshfs_exchange_total counters.
func exchangeEvents(t *testing.T, hc *http.Client, d *daemon) map[string]int {
	t.Helper()
	resp, err := hc.Get(d.API + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var event string
		var n float64
		if _, err := fmt.Sscanf(sc.Text(), "meshfs_exchange_total{event=%q} %g", &event, &n); err == nil {
			out[event] = int(n)
		}
	}
	return out
}

// A popular dataset behind a slow uplink: several readers fetch it from
// one provider at once, sharing its line. Every one of them gets the
// whole file, and nobody drops the provider for answering slowly.
func TestPopularDatasetOnSlowUplink(t *testing.T) {
	t.Parallel()
	na, nb := newLink(t, "4mbit")
	tmp := t.TempDir()
	a := startDaemonUnder(t, na.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/198.18.0.1/tcp/4001")
	path := writeRandomFile(t, tmp, 3<<20, 1950)
	c := a.upload(t, path)
	const readers = 3
	var bs []*daemon
	for i := range readers {
		bs = append(bs, startDaemonUnder(t, nb.Exec(), filepath.Join(tmp, fmt.Sprintf("b%d", i)), "",
			"--listen", fmt.Sprintf("/ip4/198.18.0.2/tcp/%d", 4001+i), "--bootstrap", a.p2pAddr(t)))
	}
	errs := make(chan error, readers)
	for i, b := range bs {
		go func() {
			got := filepath.Join(tmp, fmt.Sprintf("got%d", i))
			// Not t's helpers: they may stop the test, which only its own
			// goroutine may.
			r, err := b.CLI(nil, "download", c, "-o", got)
			if err != nil || r.Code != 0 {
				errs <- fmt.Errorf("reader %d: download: exit %d, %v: %s", i, r.Code, err, r.Stderr)
				return
			}
			if r, err := cluster.Run(nil, "cmp", got, path); err != nil || r.Code != 0 {
				errs <- fmt.Errorf("reader %d: cmp: %v %s", i, err, r.Stdout+r.Stderr)
				return
			}
			errs <- nil
		}()
	}
	for range readers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i, b := range bs {
		if n := exchangeEvents(t, nb.HTTPClient(), b)["peer_dropped"]; n != 0 {
			t.Errorf("reader %d dropped %d peers", i, n)
		}
	}
}

// A provider far away (150 ms at 20 Mbit/s: another continent; 300 ms at
// 2 Mbit/s: a satellite line): the read completes with identical bytes,
// the provider kept. The round trip comes from a delay line between the
// namespaces, the rate from tbf.
func TestFarProvider(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN device for the delay line (%v): skipping", err)
	}
	for i, tc := range []struct {
		rtt  time.Duration
		rate string
		size int64
	}{
		{150 * time.Millisecond, "20mbit", 8 << 20},
		{300 * time.Millisecond, "2mbit", 2 << 20},
	} {
		t.Run(tc.rtt.String(), func(t *testing.T) {
			t.Parallel()
			na, nb, _ := newNamespaces(t)
			a4, b4 := fmt.Sprintf("198.18.%d.1", 30+i), fmt.Sprintf("198.18.%d.2", 30+i)
			dl, err := cluster.NewDelayLine(na, nb, a4, b4, tc.rate, 64<<10, 1<<20, tc.rtt/2)
			if err != nil {
				t.Skipf("delay line: %v: skipping", err)
			}
			t.Cleanup(dl.Close)
			tmp := t.TempDir()
			a := startDaemonUnder(t, na.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/"+a4+"/tcp/4001")
			path := writeRandomFile(t, tmp, tc.size, 1990)
			c := a.upload(t, path)
			b := startDaemonUnder(t, nb.Exec(), filepath.Join(tmp, "b"), "", "--listen", "/ip4/"+b4+"/tcp/4001",
				"--bootstrap", a.p2pAddr(t))
			got := filepath.Join(tmp, "got")
			if r := b.meshfs(t, "download", c, "-o", got); r.code != 0 {
				t.Fatalf("download from a provider %s away: exit %d: %s", tc.rtt, r.code, r.stderr)
			}
			must(t, "cmp", got, path)
			if n := exchangeEvents(t, nb.HTTPClient(), b)["peer_dropped"]; n != 0 {
				t.Errorf("the reader dropped %d peers", n)
			}
		})
	}
}

// Readers that hold a dataset serve it to the next ones: B0 reads the
// whole file across A's slow uplink, and then B1, beside it, takes most of
// the file from B0 rather than all of it across that uplink again.
func TestReadersServeEachOther(t *testing.T) {
	t.Parallel()
	na, nb := newLink(t, "2mbit")
	tmp := t.TempDir()
	a := startDaemonUnder(t, na.Exec(), filepath.Join(tmp, "a"), "", "--listen", "/ip4/198.18.0.1/tcp/4001")
	const size = 2 << 20
	path := writeRandomFile(t, tmp, size, 1990)
	c := a.upload(t, path)
	var bs []*daemon
	for i := range 2 {
		bs = append(bs, startDaemonUnder(t, nb.Exec(), filepath.Join(tmp, fmt.Sprintf("b%d", i)), "",
			"--listen", fmt.Sprintf("/ip4/198.18.0.2/tcp/%d", 4001+i), "--bootstrap", a.p2pAddr(t)))
	}
	mark := bs[0].LogMark()
	got := filepath.Join(tmp, "got0")
	if r := bs[0].meshfs(t, "download", c, "-o", got); r.code != 0 {
		t.Fatalf("first reader: download: exit %d: %s", r.code, r.stderr)
	}
	must(t, "cmp", got, path)
	if _, err := bs[0].WaitLog(mark, regexp.MustCompile(`serving a dataset read whole`), 30*time.Second); err != nil {
		t.Fatalf("the first reader does not offer what it read: %v", err)
	}
	sentBefore := exchangeEvents(t, na.HTTPClient(), a)["block_sent"]
	got = filepath.Join(tmp, "got1")
	if r := bs[1].meshfs(t, "download", c, "-o", got); r.code != 0 {
		t.Fatalf("second reader: download: exit %d: %s", r.code, r.stderr)
	}
	must(t, "cmp", got, path)
	fromA := exchangeEvents(t, na.HTTPClient(), a)["block_sent"] - sentBefore
	fromB0 := exchangeEvents(t, nb.HTTPClient(), bs[0])["block_sent"]
	const blocks = size / (64 << 10)
	if fromB0 == 0 || fromA >= blocks {
		t.Fatalf("the second reader took %d blocks from the provider and %d from the first reader; want most of its %d from the first reader",
			fromA, fromB0, blocks)
	}
	t.Logf("second reader: %d blocks from the provider behind 2 Mbit/s, %d from the reader beside it", fromA, fromB0)
}
