package node

// Retention's rules (TTL, LRU under the quota, pins, reconciling at start,
// twins) are tested in package retention over a bare store; these tests
// are of the node's use of it: readers and fetches holding what they read,
// reads counting as accesses, a full store collecting for the exchange.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/integration/testkit"
)

// gcNode starts a node on dir with a real repository, 4 KiB blocks,
// unprotected unless cfg sets EcK (so sizes are easy to reason about), and
// a clock of the test's.
func gcNode(t *testing.T, dir string, cfg Config) (*Node, *testkit.Clock) {
	t.Helper()
	cfg.DataDir = dir
	if cfg.BlockSize == 0 {
		cfg.BlockSize = testBS
	}
	if cfg.EcK == 0 {
		cfg.EcK, cfg.EcM = 2, 0
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 20 * time.Second
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	clk := testkit.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	if cfg.Clock == nil {
		cfg.Clock = clk.Now
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, clk
}

func uploadTo(t *testing.T, n *Node, data []byte) cid.Cid {
	t.Helper()
	c, err := n.Upload(t.Context(), bytes.NewReader(data), "", "")
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	return c
}

// cachedUpload uploads data and unpins it: a cached dataset, last read now.
func cachedUpload(t *testing.T, n *Node, data []byte) cid.Cid {
	t.Helper()
	c := uploadTo(t, n, data)
	if err := n.Unpin(t.Context(), c); err != nil {
		t.Fatalf("unpin: %v", err)
	}
	return c
}

func used(t *testing.T, n *Node) uint64 {
	t.Helper()
	u, err := n.Space(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return u.UsedBytes
}

func runGC(t *testing.T, n *Node) GCResult {
	t.Helper()
	res, err := n.GC(t.Context())
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	return res
}

func removedCIDs(res GCResult) []cid.Cid {
	var out []cid.Cid
	for _, r := range res.Removed {
		out = append(out, r.CID)
	}
	return out
}

// listed maps each dataset held to whether it is pinned.
func listed(t *testing.T, n *Node) map[cid.Cid]bool {
	t.Helper()
	entries, err := n.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[cid.Cid]bool{}
	for _, e := range entries {
		out[e.CID] = e.Pinned
	}
	return out
}

// readBack reads dataset c through the node and checks its bytes.
func readBack(t *testing.T, n *Node, c cid.Cid, want []byte) {
	t.Helper()
	readWith(t, n.Open, c, want)
}

// readWith reads dataset c as open opens it and checks its bytes.
func readWith(t *testing.T, open func(context.Context, cid.Cid) (*Dataset, error), c cid.Cid, want []byte) {
	t.Helper()
	d, err := open(t.Context(), c)
	if err != nil {
		t.Fatalf("open %s: %v", c, err)
	}
	defer d.Close()
	got, err := io.ReadAll(d.Reader(t.Context()))
	if err != nil {
		t.Fatalf("read %s: %v", c, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %s: %d bytes differing from the %d uploaded", c, len(got), len(want))
	}
}

// A dataset with an open reader, or a background fetch, is not collected
// until the reader is closed.
func TestGCSkipsDatasetsInUse(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{CacheTTL: time.Hour})
	data := randomBytes(5, 6*testBS)
	c := cachedUpload(t, n, data)
	d, err := n.Open(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if res := runGC(t, n); len(res.Removed) != 0 {
		t.Fatalf("GC removed %v while a reader had it open", removedCIDs(res))
	}
	got := make([]byte, len(data))
	if _, err := d.ReadAt(t.Context(), got, 0); err != nil && !errors.Is(err, io.EOF) || !bytes.Equal(got, data) {
		t.Fatalf("read after the GC: %v", err)
	}
	d.Close()
	d.Close() // idempotent: must not release someone else's hold

	// The read above counts as an access: not expired yet.
	if res := runGC(t, n); len(res.Removed) != 0 {
		t.Fatalf("GC removed %v right after it was read", removedCIDs(res))
	}
	clk.Advance(2 * time.Hour)
	if res := runGC(t, n); !slices.Equal(removedCIDs(res), []cid.Cid{c}) {
		t.Fatalf("removed %v once closed and expired; want %s", removedCIDs(res), c)
	}
}

// A reader kept after its dataset was collected (as the mount keeps one)
// brings the manifest back with its next read, as a cached dataset, so
// the blocks it fetches again belong to a listed dataset.
func TestReadAfterCollectionRestoresManifest(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{CacheTTL: time.Hour, FetchTimeout: 100 * time.Millisecond})
	c := cachedUpload(t, n, randomBytes(6, 3*testBS))
	d, err := n.Open(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	clk.Advance(2 * time.Hour)
	if res := runGC(t, n); len(res.Removed) != 1 {
		t.Fatalf("removed %v; want the dataset", removedCIDs(res))
	}
	// No peer has the blocks any more: the read fails, but its manifest
	// is back, cached, and collectable again. (The last block: a read
	// there starts no read-ahead, which would hold the dataset longer.)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := d.ReadAt(ctx, make([]byte, 10), 2*testBS); err == nil {
		t.Fatal("read of a collected dataset with no provider succeeded")
	}
	if got, ok := listed(t, n)[c]; !ok || got {
		t.Fatalf("after the read the dataset is listed: %v, pinned: %v; want listed, cached", ok, got)
	}
	clk.Advance(2 * time.Hour)
	if res := runGC(t, n); !slices.Equal(removedCIDs(res), []cid.Cid{c}) {
		t.Fatalf("second GC removed %v; want the restored dataset", removedCIDs(res))
	}
}

// Two nodes: what B reads from A is cached on B, and when B's store is
// full, reading another dataset collects the least recently used one to
// make room instead of failing.
func TestFetchIntoFullCacheCollects(t *testing.T) {
	a, _ := gcNode(t, filepath.Join(t.TempDir(), "a"), Config{})
	old := randomBytes(15, 16*testBS)
	fresh := randomBytes(16, 16*testBS)
	oldCID, freshCID := uploadTo(t, a, old), uploadTo(t, a, fresh)
	datasetBytes := used(t, a) / 2

	// Room for one dataset and a half.
	quota := datasetBytes * 3 / 2
	b, clk := gcNode(t, filepath.Join(t.TempDir(), "b"), Config{QuotaBytes: quota, Bootstrap: a.Addrs()[:1]})
	if err := b.Connect(t.Context(), a.ID(), a.Addrs()); err != nil {
		t.Fatal(err)
	}
	readBack(t, b, oldCID, old)
	if pinned, ok := listed(t, b)[oldCID]; !ok || pinned {
		t.Fatalf("a dataset read from the network is listed %v, pinned %v; want listed, cached", ok, pinned)
	}

	clk.Advance(time.Minute)
	readBack(t, b, freshCID, fresh)
	got := listed(t, b)
	if _, ok := got[oldCID]; ok || len(got) != 1 {
		t.Fatalf("B holds %v; want only the dataset read last", got)
	}
	if u := used(t, b); u > quota {
		t.Fatalf("B uses %d bytes, over its quota of %d", u, quota)
	}
	if got := b.keep.Stats().Datasets; got != 1 {
		t.Fatalf("%d datasets collected; want 1", got)
	}

	// Pinning a dataset B does not hold fetches all of it.
	res, err := b.Pin(t.Context(), oldCID)
	if err != nil || res.Local || !res.Fetching {
		t.Fatalf("Pin of a dataset not held: %+v, %v", res, err)
	}
	b.fetch.Wait()
	if p, _ := b.FetchStatus(oldCID); !p.Done || p.Error != "" || p.Fetched != p.Blocks {
		t.Fatalf("fetch after Pin: %+v", p)
	}
	got = listed(t, b)
	if !got[oldCID] || len(got) != 1 {
		t.Fatalf("B holds %v; want only the pinned dataset, the cached one collected for it", got)
	}
}
