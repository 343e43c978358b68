package integration

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pinnedColumn returns the PINNED column `meshfs ls` prints for each CID.
func pinnedColumn(t *testing.T, d *daemon) map[string]string {
	t.Helper()
	r := d.meshfs(t, "ls")
	if r.code != 0 {
		t.Fatalf("meshfs ls: exit %d: %s", r.code, r.stderr)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 3 {
			out[f[0]] = f[2]
		}
	}
	return out
}

// A reader with a small quota keeps reading new datasets from the network:
// when its store is full, the cached dataset read least recently gives way,
// never a pinned one, and what it reads is intact.
func TestGarbageCollectionKeepsPinsWithinQuota(t *testing.T) {
	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	const size = 2 << 20
	var files, cids []string
	for i := range 4 {
		f := writeRandomFile(t, tmp, size, int64(100+i))
		files = append(files, f)
		cids = append(cids, a.upload(t, f))
	}
	x, y, z, w := cids[0], cids[1], cids[2], cids[3]

	// Room for B's own upload (1.5 MiB with its parity) and two datasets
	// read from the network (2 MiB each: a read fetches no parity), not
	// three; and, once one of them is pinned (which fetches its 1 MiB of
	// parity too), for it and one more.
	b := startDaemon(t, filepath.Join(tmp, "b"), "", append(listen,
		"--quota", "7MiB", "--gc-interval", "0", "--bootstrap", a.p2pAddr(t))...)
	ownPath := writeRandomFile(t, tmp, 1<<20, 99)
	own := b.upload(t, ownPath)

	download := func(c, file string) {
		t.Helper()
		got := filepath.Join(tmp, "got-"+c)
		if r := b.meshfs(t, "download", c, "-o", got); r.code != 0 {
			t.Fatalf("download %s into a full cache: exit %d: %s", c, r.code, r.stderr)
		}
		must(t, "cmp", got, file)
	}
	download(x, files[0])
	download(y, files[1])
	if p := pinnedColumn(t, b); p[own] != "yes" || p[x] != "no" || p[y] != "no" {
		t.Fatalf("after two downloads, PINNED = %v; want own upload yes, %s and %s no", p, x, y)
	}

	// The third does not fit: x, read least recently, is collected.
	download(z, files[2])
	p := pinnedColumn(t, b)
	if _, held := p[x]; held {
		t.Errorf("%s still held after the store filled up; want it collected (least recently read)", x)
	}
	if p[own] != "yes" || p[y] != "no" || p[z] != "no" {
		t.Errorf("PINNED = %v; want own upload pinned, %s and %s cached", p, y, z)
	}

	// Pinned, y stays however the cache churns: reading w makes room by
	// collecting z.
	if r := b.meshfs(t, "pin", y); r.code != 0 {
		t.Fatalf("meshfs pin: exit %d: %s", r.code, r.stderr)
	}
	download(w, files[3])
	p = pinnedColumn(t, b)
	if p[y] != "yes" || p[own] != "yes" || p[w] != "no" {
		t.Errorf("PINNED = %v; want %s and own upload pinned and kept, %s cached", p, y, w)
	}
	if _, held := p[z]; held {
		t.Errorf("%s still held; want it collected to make room for %s", z, w)
	}
	resp, err := http.Get(b.API + "/api/codex/v1/space")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var space struct{ QuotaMaxBytes, QuotaUsedBytes uint64 }
	if err := json.NewDecoder(resp.Body).Decode(&space); err != nil {
		t.Fatal(err)
	}
	if space.QuotaUsedBytes > space.QuotaMaxBytes || space.QuotaMaxBytes != 7<<20 {
		t.Errorf("space: %d of %d bytes used; want within the 7 MiB quota", space.QuotaUsedBytes, space.QuotaMaxBytes)
	}

	// The pinned datasets are whole after the collections, one more
	// included, on B's own: with A gone, nothing can come from the
	// network. The pin of y has fetched the rest of it (its parity) first.
	deadline := time.Now().Add(time.Minute)
	for p := progress(t, http.DefaultClient, b, y); !p.found || !p.Done; p = progress(t, http.DefaultClient, b, y) {
		if time.Now().After(deadline) {
			t.Fatalf("the pin of %s is still fetching after a minute: %s", y, p.raw)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if p := progress(t, http.DefaultClient, b, y); p.Error != "" {
		t.Errorf("the pin's fetch of %s failed: %s", y, p.raw)
	}
	gc(t, b)
	if p := pinnedColumn(t, b); p[y] != "yes" || p[own] != "yes" {
		t.Errorf("after meshfs gc PINNED = %v; want %s and own upload %s pinned and kept", p, y, own)
	}
	if err := a.stop(); err != nil {
		t.Fatalf("A's exit: %v", err)
	}
	readsBack(t, b, "", own, ownPath, "B's own upload after the collections")
	readsBack(t, b, "", y, files[1], "the pinned dataset after the collections")
}
