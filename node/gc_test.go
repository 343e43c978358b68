package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/retention"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
	"github.com/meshfs/meshfs/store/repo"
)

// clock is the time the node under test sees; tests move it by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// gcNode starts a node on dir with a real repository, 4 KiB blocks,
// unprotected unless cfg sets EcK (so sizes are easy to reason about), and
// a clock of the test's.
func gcNode(t *testing.T, dir string, cfg Config) (*Node, *clock) {
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
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	if cfg.Clock == nil {
		cfg.Clock = clk.now
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

func TestGCKeepsPinnedRemovesExpired(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{CacheTTL: time.Hour})
	pinnedData := randomBytes(1, 10*testBS)
	pinned := uploadTo(t, n, pinnedData)
	pinnedOnly := used(t, n)
	cached := cachedUpload(t, n, randomBytes(2, 10*testBS))
	if got := listed(t, n); !got[pinned] || got[cached] {
		t.Fatalf("listing says pinned=%v for the upload, %v for the unpinned one", got[pinned], got[cached])
	}

	clk.advance(59 * time.Minute)
	if res := runGC(t, n); len(res.Removed) != 0 {
		t.Fatalf("GC before the TTL removed %v", removedCIDs(res))
	}

	clk.advance(2 * time.Hour)
	res := runGC(t, n)
	if len(res.Removed) != 1 || !res.Removed[0].CID.Equals(cached) || res.Removed[0].Reason != "expired" {
		t.Fatalf("GC after the TTL removed %+v; want only the cached dataset, expired", res.Removed)
	}
	if u := used(t, n); u != pinnedOnly || res.BytesFreed == 0 {
		t.Fatalf("after GC %d bytes used, %d freed; want the pinned dataset's %d", u, res.BytesFreed, pinnedOnly)
	}
	if got := listed(t, n); len(got) != 1 || !got[pinned] {
		t.Fatalf("datasets after GC: %v", got)
	}
	readBack(t, n, pinned, pinnedData)
	if ok, _ := n.Has(t.Context(), cached); ok {
		t.Fatal("the collected dataset's manifest is still held")
	}
	if _, err := n.ret.GetRetention(t.Context(), cached); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record of the collected dataset: %v; want it gone", err)
	}
}

// Under quota pressure the least recently read cached datasets go first,
// in order of their last read (not of upload or unpinning), and the
// collection stops once usage is below the low watermark.
func TestGCEvictsLeastRecentlyUsedUnderQuota(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{}) // no TTL: only the quota counts
	pinned := uploadTo(t, n, randomBytes(10, 10*testBS))
	sizes := map[string]int{"a": 2, "b": 10, "c": 10, "d": 10} // blocks
	data := map[string][]byte{}
	cids := map[string]cid.Cid{}
	// Unpinned in the order d, c, b, a: by that alone, d would go first.
	for i, k := range []string{"d", "c", "b", "a"} {
		data[k] = randomBytes(uint64(20+i), sizes[k]*testBS)
		cids[k] = cachedUpload(t, n, data[k])
		clk.advance(time.Minute)
	}
	// Read in the order a, b, c, d: now a is the least recently used.
	for _, k := range []string{"a", "b", "c", "d"} {
		clk.advance(2 * time.Minute)
		readBack(t, n, cids[k], data[k])
	}

	total := used(t, n)
	quota := total + 1 // above the high watermark
	n.store.(*repo.Store).SetQuota(quota)
	res := runGC(t, n)
	// Removing a (2 blocks of 42) leaves usage above 80%; removing b
	// brings it to 30 of 42 blocks.
	if got, want := removedCIDs(res), []cid.Cid{cids["a"], cids["b"]}; !slices.Equal(got, want) {
		t.Fatalf("removed %v; want a then b: %v", got, want)
	}
	for _, r := range res.Removed {
		if r.Reason != "quota" {
			t.Fatalf("removed %s for %q; want quota", r.CID, r.Reason)
		}
	}
	if u := used(t, n); u >= retention.LowWatermark(quota) || total-u != res.BytesFreed {
		t.Fatalf("after GC %d of %d bytes used (low watermark %d), %d reported freed", u, quota, retention.LowWatermark(quota), res.BytesFreed)
	}
	got := listed(t, n)
	if len(got) != 3 || !got[pinned] {
		t.Fatalf("datasets after GC: %v", got)
	}
	readBack(t, n, cids["c"], data["c"])
	readBack(t, n, cids["d"], data["d"])

	// Below the high watermark nothing more goes.
	if res := runGC(t, n); len(res.Removed) != 0 {
		t.Fatalf("a second GC removed %v", removedCIDs(res))
	}
}

// Making room for a write larger than the whole quota collects nothing:
// it could not fit in an empty store, and the cache would be lost for it.
func TestMakeRoomBeyondQuotaKeepsCache(t *testing.T) {
	n, _ := gcNode(t, t.TempDir(), Config{})
	data := randomBytes(30, 4*testBS)
	c := cachedUpload(t, n, data)
	quota := used(t, n) + 1 // above the high watermark already
	n.store.(*repo.Store).SetQuota(quota)
	res, err := n.MakeRoom(t.Context(), quota+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 {
		t.Fatalf("MakeRoom for more than the quota removed %v; want nothing", removedCIDs(res))
	}
	readBack(t, n, c, data)
	// Room that can be made still is.
	if res, err := n.MakeRoom(t.Context(), testBS); err != nil || len(res.Removed) != 1 {
		t.Fatalf("MakeRoom for one block: removed %v, %v; want the cached dataset", removedCIDs(res), err)
	}
}

// Blocks a collected dataset shares with a pinned one stay: the pinned
// dataset reads back whole.
func TestGCKeepsBlocksSharedWithPinned(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{CacheTTL: time.Hour})
	base := randomBytes(3, 8*testBS)
	pinned := uploadTo(t, n, base)
	pinnedOnly := used(t, n)
	// The same 8 blocks and 4 more: fixed-size blocks make the first 8
	// the very same blocks.
	longer := append(slices.Clone(base), randomBytes(4, 4*testBS)...)
	cached := cachedUpload(t, n, longer)
	// Its 4 blocks of its own, its 12 leaves' proofs and its manifest.
	if u := used(t, n); u-pinnedOnly > 4*testBS+12*uint64(merkle.MaxProofLen(12))+manifestAllowance {
		t.Fatalf("the longer dataset took %d more bytes; the shared blocks were stored twice", u-pinnedOnly)
	}

	clk.advance(2 * time.Hour)
	if res := runGC(t, n); !slices.Equal(removedCIDs(res), []cid.Cid{cached}) {
		t.Fatalf("removed %v; want the cached dataset", removedCIDs(res))
	}
	if u := used(t, n); u != pinnedOnly {
		t.Fatalf("%d bytes used after GC; want the pinned dataset's %d", u, pinnedOnly)
	}
	readBack(t, n, pinned, base)
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
	clk.advance(2 * time.Hour)
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
	clk.advance(2 * time.Hour)
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
	clk.advance(2 * time.Hour)
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
	clk.advance(2 * time.Hour)
	if res := runGC(t, n); !slices.Equal(removedCIDs(res), []cid.Cid{c}) {
		t.Fatalf("second GC removed %v; want the restored dataset", removedCIDs(res))
	}
}

// Reads record their access at most once per accessInterval.
func TestAccessTimeWrittenAtMostOncePerInterval(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{})
	data := randomBytes(7, 2*testBS)
	c := cachedUpload(t, n, data)
	start := clk.now()
	last := func() time.Time {
		t.Helper()
		r, err := n.ret.GetRetention(t.Context(), c)
		if err != nil || r.Pinned {
			t.Fatalf("record: %+v, %v", r, err)
		}
		return r.LastAccess
	}
	clk.advance(30 * time.Second)
	readBack(t, n, c, data)
	if got := last(); !got.Equal(start) {
		t.Fatalf("read 30s after the last write moved the access time to %v", got)
	}
	clk.advance(time.Minute)
	readBack(t, n, c, data)
	if got, want := last(), start.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("access time %v after a read 90s later; want %v", got, want)
	}
}

func TestPinUnpin(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{CacheTTL: time.Hour})
	data := randomBytes(8, 4*testBS)
	c := cachedUpload(t, n, data)
	res, err := n.Pin(t.Context(), c)
	if err != nil || !res.Local {
		t.Fatalf("Pin: %+v, %v; want local", res, err)
	}
	n.fetch.wait() // a cached dataset is completed in the background
	if !listed(t, n)[c] {
		t.Fatal("not listed as pinned after Pin")
	}
	clk.advance(48 * time.Hour)
	if res := runGC(t, n); len(res.Removed) != 0 {
		t.Fatalf("GC removed pinned %v", removedCIDs(res))
	}
	if err := n.Unpin(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if listed(t, n)[c] {
		t.Fatal("listed as pinned after Unpin")
	}
	// Unpinned counts as just read: the TTL starts now.
	if res := runGC(t, n); len(res.Removed) != 0 {
		t.Fatalf("GC right after Unpin removed %v", removedCIDs(res))
	}
	clk.advance(2 * time.Hour)
	if res := runGC(t, n); len(res.Removed) != 1 {
		t.Fatalf("GC an expiry after Unpin removed %v", removedCIDs(res))
	}
	if err := n.Unpin(t.Context(), c); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Unpin of a dataset not held: %v; want ErrNotFound", err)
	}
}

// Pins survive a restart; a dataset with no record at all (a repository
// from before records) counts as pinned.
func TestPinsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	n, _ := gcNode(t, dir, Config{CacheTTL: time.Hour})
	pinned := uploadTo(t, n, randomBytes(11, 3*testBS))
	cached := cachedUpload(t, n, randomBytes(12, 3*testBS))
	legacy := uploadTo(t, n, randomBytes(13, 3*testBS))
	if err := n.ret.DeleteRetention(t.Context(), legacy); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n, clk := gcNode(t, dir, Config{CacheTTL: time.Hour})
	got := listed(t, n)
	if len(got) != 3 || !got[pinned] || got[cached] || !got[legacy] {
		t.Fatalf("after reopening: %v; want %s and %s pinned, %s cached", got, pinned, legacy, cached)
	}
	clk.advance(24 * 365 * time.Hour)
	if res := runGC(t, n); !slices.Equal(removedCIDs(res), []cid.Cid{cached}) {
		t.Fatalf("removed %v; want only the cached dataset", removedCIDs(res))
	}
}

func TestGCHonoursCancellation(t *testing.T) {
	n, clk := gcNode(t, t.TempDir(), Config{CacheTTL: time.Hour})
	cachedUpload(t, n, randomBytes(14, 2*testBS))
	clk.advance(2 * time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if res, err := n.GC(ctx); !errors.Is(err, context.Canceled) || len(res.Removed) != 0 {
		t.Fatalf("GC with a cancelled context: %v, removed %v", err, removedCIDs(res))
	}
	if len(listed(t, n)) != 1 {
		t.Fatal("a cancelled GC removed the dataset")
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

	clk.advance(time.Minute)
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
	b.fetch.wait()
	if p, _ := b.FetchStatus(oldCID); !p.Done || p.Error != "" || p.Fetched != p.Blocks {
		t.Fatalf("fetch after Pin: %+v", p)
	}
	got = listed(t, b)
	if !got[oldCID] || len(got) != 1 {
		t.Fatalf("B holds %v; want only the pinned dataset, the cached one collected for it", got)
	}
}
