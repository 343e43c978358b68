package retention

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

func TestCollectKeepsPinnedRemovesExpired(t *testing.T) {
	eachStore(t, Config{CacheTTL: time.Hour}, func(t *testing.T, f *fixture) {
		pinnedData := data(1, 10)
		pinned := f.pinned(pinnedData, "")
		pinnedOnly := f.used()
		cached := f.cached(data(2, 10), "")
		if got := f.held(); !got[pinned] || got[cached] {
			t.Fatalf("records say pinned=%v for the pinned, %v for the unpinned one", got[pinned], got[cached])
		}

		f.clk.Advance(59 * time.Minute)
		if res := f.gc(); len(res.Removed) != 0 {
			t.Fatalf("GC before the TTL removed %v", removedCIDs(res))
		}
		f.clk.Advance(2 * time.Hour)
		res := f.gc()
		if len(res.Removed) != 1 || !res.Removed[0].CID.Equals(cached) || res.Removed[0].Reason != "expired" {
			t.Fatalf("GC after the TTL removed %+v; want only the cached dataset, expired", res.Removed)
		}
		if u := f.used(); u != pinnedOnly || res.BytesFreed == 0 {
			t.Fatalf("after GC %d bytes used, %d freed; want the pinned dataset's %d", u, res.BytesFreed, pinnedOnly)
		}
		if got := f.held(); len(got) != 1 || !got[pinned] {
			t.Fatalf("datasets after GC: %v", got)
		}
		f.readBack(pinned, pinnedData)
		if ok, _ := f.st.Has(t.Context(), cached); ok {
			t.Fatal("the collected dataset's manifest is still held")
		}
		if _, err := f.record(cached); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("record of the collected dataset: %v; want it gone", err)
		}
		if s := f.k.Stats(); s.Runs != 2 || s.Datasets != 1 || s.Bytes != res.BytesFreed {
			t.Fatalf("stats %+v; want 2 runs, 1 dataset, %d bytes", s, res.BytesFreed)
		}
	})
}

// Under quota pressure the least recently read cached datasets go first,
// in order of their last read (not of storing or unpinning), and the
// collection stops once usage is below the low watermark.
func TestCollectLeastRecentlyUsedUnderQuota(t *testing.T) {
	f := repoFixture(t, t.TempDir(), 0, Config{}) // no TTL: only the quota counts
	pinned := f.pinned(data(10, 10), "")
	sizes := map[string]int{"a": 2, "b": 10, "c": 10, "d": 10} // blocks
	contents := map[string][]byte{}
	cids := map[string]cid.Cid{}
	blocks := map[string]store.Block{}
	// Unpinned in the order d, c, b, a: by that alone, d would go first.
	for i, k := range []string{"d", "c", "b", "a"} {
		contents[k] = data(uint64(20+i), sizes[k])
		cids[k] = f.cached(contents[k], "")
		f.clk.Advance(time.Minute)
	}
	// Read in the order a, b, c, d: now a is the least recently used.
	for _, k := range []string{"a", "b", "c", "d"} {
		f.clk.Advance(2 * time.Minute)
		mb, err := f.st.Get(t.Context(), cids[k])
		if err != nil {
			t.Fatal(err)
		}
		blocks[k] = mb
		f.k.Accessed(t.Context(), mb, cid.Undef, false)
	}

	total := f.used()
	quota := total + 1 // above the high watermark
	f.st.(interface{ SetQuota(uint64) }).SetQuota(quota)
	res := f.gc()
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
	if u := f.used(); u >= LowWatermark(quota) || total-u != res.BytesFreed {
		t.Fatalf("after GC %d of %d bytes used (low watermark %d), %d reported freed", u, quota, LowWatermark(quota), res.BytesFreed)
	}
	if got := f.held(); len(got) != 3 || !got[pinned] {
		t.Fatalf("datasets after GC: %v", got)
	}
	f.readBack(cids["c"], contents["c"])
	f.readBack(cids["d"], contents["d"])
	// Below the high watermark nothing more goes.
	if res := f.gc(); len(res.Removed) != 0 {
		t.Fatalf("a second GC removed %v", removedCIDs(res))
	}
}

// Making room for a write larger than the whole quota collects nothing:
// it could not fit in an empty store, and the cache would be lost for it.
func TestMakeRoomBeyondQuotaKeepsCache(t *testing.T) {
	f := repoFixture(t, t.TempDir(), 0, Config{})
	contents := data(30, 4)
	c := f.cached(contents, "")
	quota := f.used() + 1 // above the high watermark already
	f.st.(interface{ SetQuota(uint64) }).SetQuota(quota)
	res, err := f.k.MakeRoom(t.Context(), quota+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 {
		t.Fatalf("MakeRoom for more than the quota removed %v; want nothing", removedCIDs(res))
	}
	f.readBack(c, contents)
	// Room that can be made still is.
	if res, err := f.k.MakeRoom(t.Context(), testBS); err != nil || len(res.Removed) != 1 {
		t.Fatalf("MakeRoom for one block: removed %v, %v; want the cached dataset", removedCIDs(res), err)
	}
}

// Blocks a collected dataset shares with a pinned one stay.
func TestCollectKeepsBlocksSharedWithPinned(t *testing.T) {
	eachStore(t, Config{CacheTTL: time.Hour}, func(t *testing.T, f *fixture) {
		base := data(3, 8)
		pinned := f.pinned(base, "")
		pinnedOnly := f.used()
		// The same 8 blocks and 4 more.
		cached := f.cached(append(slices.Clone(base), data(4, 4)...), "")
		f.clk.Advance(2 * time.Hour)
		if res := f.gc(); !slices.Equal(removedCIDs(res), []cid.Cid{cached}) {
			t.Fatalf("removed %v; want the cached dataset", removedCIDs(res))
		}
		if u := f.used(); u != pinnedOnly {
			t.Fatalf("%d bytes used after GC; want the pinned dataset's %d", u, pinnedOnly)
		}
		f.readBack(pinned, base)
	})
}

// A dataset in use is not collected until the last use ends; a release
// called twice ends one use only.
func TestCollectSkipsDatasetsInUse(t *testing.T) {
	eachStore(t, Config{CacheTTL: time.Hour}, func(t *testing.T, f *fixture) {
		c := f.cached(data(5, 6), "")
		first, err := f.k.Use(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		second := f.k.AddUse(c)
		f.clk.Advance(2 * time.Hour)
		first()
		first()
		if res := f.gc(); len(res.Removed) != 0 {
			t.Fatalf("GC removed %v while it was in use", removedCIDs(res))
		}
		second()
		if res := f.gc(); !slices.Equal(removedCIDs(res), []cid.Cid{c}) {
			t.Fatalf("removed %v once unused; want %s", removedCIDs(res), c)
		}
	})
}

func TestCollectHonoursCancellation(t *testing.T) {
	f := memoryFixture(t, 0, Config{CacheTTL: time.Hour})
	f.cached(data(14, 2), "")
	f.clk.Advance(2 * time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if res, err := f.k.GC(ctx); !errors.Is(err, context.Canceled) || len(res.Removed) != 0 {
		t.Fatalf("GC with a cancelled context: %v, removed %v", err, removedCIDs(res))
	}
	if len(f.held()) != 1 {
		t.Fatal("a cancelled GC removed the dataset")
	}
}

// A write that finds the store full collects a cached dataset and is
// tried again; when nothing can go, writes fail at once for a while
// rather than each collecting in vain.
func TestReclaimOnFullStore(t *testing.T) {
	one := need(t, map[string][]byte{"": data(40, 4)})
	f := memoryFixture(t, one+one/2, Config{})
	full := store.Reclaiming(f.st, f.k)
	old := f.cached(data(40, 4), "")
	f.clk.Advance(time.Minute)
	fresh, err := write(t.Context(), f.k, full, data(41, 4), "")
	if err != nil {
		t.Fatalf("write into a full store with a cached dataset: %v", err)
	}
	if got := f.held(); len(got) != 1 || !got[fresh] {
		t.Fatalf("held %v; want only %s, the cached %s collected for it", got, fresh, old)
	}
	runs := f.k.Stats().Runs
	if _, err := write(t.Context(), f.k, full, data(42, 4), ""); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("write with everything pinned: %v; want ErrQuotaExceeded", err)
	}
	afterFutile := f.k.Stats().Runs
	if afterFutile == runs {
		t.Fatal("a full store with nothing to collect did not collect")
	}
	if f.k.Reclaim(t.Context(), one) || f.k.Stats().Runs != afterFutile {
		t.Fatal("a reclaim right after a futile one collected again")
	}
	f.clk.Advance(reclaimBackoff)
	if f.k.Reclaim(t.Context(), one); f.k.Stats().Runs == afterFutile {
		t.Fatal("a reclaim after the backoff did not collect")
	}
	if u := f.used(); u != one {
		t.Fatalf("%d bytes used; the dataset held needs %d", u, one)
	}
}
