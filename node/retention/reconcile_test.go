package retention

import (
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// Pins survive a restart; a dataset whose manifest has no record (from
// before records, or written apart from it before a crash) is pinned at
// start with its tree; a record whose manifest is gone is dropped.
func TestReconcileAtStart(t *testing.T) {
	dir := t.TempDir()
	f := repoFixture(t, dir, 0, Config{CacheTTL: time.Hour})
	pinned := f.pinned(data(11, 3), "")
	cached := f.cached(data(12, 3), "")
	legacyData := data(13, 3)
	legacy := f.pinned(legacyData, "")
	if err := f.st.DeleteRetention(t.Context(), legacy); err != nil {
		t.Fatal(err)
	}
	stray := store.NewBlock(store.CodecManifest, []byte("gone")).CID
	if err := f.st.PutRetention(t.Context(), stray, store.Retention{}); err != nil {
		t.Fatal(err)
	}

	f.restart(dir)
	got := f.held()
	if len(got) != 3 || !got[pinned] || got[cached] || !got[legacy] {
		t.Fatalf("after the restart: %v; want %s and %s pinned, %s cached, nothing else", got, pinned, legacy, cached)
	}
	if r, err := f.record(legacy); err != nil || !r.Pinned || !r.Tree.Defined() {
		t.Fatalf("record of the dataset that had none: %+v, %v; want pinned, with its tree", r, err)
	}
	f.clk.Advance(24 * 365 * time.Hour)
	if res := f.gc(); !slices.Equal(removedCIDs(res), []cid.Cid{cached}) {
		t.Fatalf("removed %v; want only the cached dataset", removedCIDs(res))
	}
	f.readBack(legacy, legacyData)
}

// Leaves no dataset names (an upload or fetch a crash cut short) are
// freed at start; those a dataset names stay.
func TestReconcileFreesUnnamedTrees(t *testing.T) {
	dir := t.TempDir()
	f := repoFixture(t, dir, 0, Config{})
	keptData := data(24, 5)
	kept := f.pinned(keptData, "kept")
	want := f.used()
	// Leaves of a tree nobody names, one block shared with kept.
	orphan := store.NewBlock(store.CodecRoot, []byte("staging")).CID
	for i, b := range [][]byte{keptData[:testBS], data(25, 1)} {
		blk := store.NewBlock(store.CodecBlock, b)
		if err := f.st.PutLeafBlock(t.Context(), store.Leaf{Tree: orphan, Index: uint64(i), Block: blk.CID}, blk); err != nil {
			t.Fatal(err)
		}
	}
	if f.used() <= want {
		t.Fatal("the orphan leaves cost nothing")
	}
	f.restart(dir)
	if u := f.used(); u != want {
		t.Fatalf("%d bytes used after the restart; the dataset held needs %d", u, want)
	}
	f.readBack(kept, keptData)
}

// The same bytes under two names are two datasets over one tree: removing
// either leaves the other whole, also across a restart, and the store
// then uses what the one left needs.
func TestRemoveTwinKeepsSharedTree(t *testing.T) {
	for _, removeFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "first", false: "second"}[removeFirst], func(t *testing.T) {
			dir := t.TempDir()
			f := repoFixture(t, dir, 0, Config{})
			contents := data(21, 11)
			a, b := f.pinned(contents, "f"), f.pinned(contents, "g")
			if a.Equals(b) {
				t.Fatal("two names gave one manifest CID")
			}
			gone, kept, keptName := a, b, "g"
			if !removeFirst {
				gone, kept, keptName = b, a, "f"
			}
			if err := f.k.Remove(t.Context(), gone); err != nil {
				t.Fatal(err)
			}
			f.readBack(kept, contents)
			if got := f.held(); len(got) != 1 || !got[kept] {
				t.Fatalf("held after removing one twin: %v; want only %s, pinned", got, kept)
			}
			want := need(t, map[string][]byte{keptName: contents})
			if u := f.used(); u != want {
				t.Fatalf("%d bytes used; the dataset left needs %d", u, want)
			}
			f.restart(dir)
			f.readBack(kept, contents)
			if u := f.used(); u != want {
				t.Fatalf("%d bytes used after a restart; the dataset left needs %d", u, want)
			}
			if err := f.k.Remove(t.Context(), kept); err != nil {
				t.Fatal(err)
			}
			if u := f.used(); u != 0 {
				t.Fatalf("%d bytes used with nothing held", u)
			}
		})
	}
}

// Collecting a cached dataset leaves a pinned one of the same bytes whole.
func TestCollectCachedTwinKeepsPinned(t *testing.T) {
	eachStore(t, Config{CacheTTL: time.Hour}, func(t *testing.T, f *fixture) {
		contents := data(22, 9)
		cached := f.cached(contents, "cached")
		pinned := f.pinned(contents, "pinned")
		f.clk.Advance(2 * time.Hour)
		if res := f.gc(); !slices.Equal(removedCIDs(res), []cid.Cid{cached}) {
			t.Fatalf("removed %v; want the cached twin", removedCIDs(res))
		}
		f.readBack(pinned, contents)
		if u, want := f.used(), need(t, map[string][]byte{"pinned": contents}); u != want {
			t.Fatalf("%d bytes used; the pinned dataset needs %d", u, want)
		}
	})
}
