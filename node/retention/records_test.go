package retention

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

type closer func()

func (c closer) Close() error { c(); return nil }

func TestPinUnpin(t *testing.T) {
	var fetched []cid.Cid
	closed := 0
	cfg := Config{CacheTTL: time.Hour}
	cfg.Fetch = func(_ context.Context, c cid.Cid) (io.Closer, error) {
		fetched = append(fetched, c)
		return closer(func() { closed++ }), nil
	}
	f := memoryFixture(t, 0, cfg)
	c := f.cached(data(8, 4), "")
	res, err := f.k.Pin(t.Context(), c)
	if err != nil || !res.Local || !res.Fetching {
		t.Fatalf("Pin of a cached dataset: %+v, %v; want local, fetching the rest", res, err)
	}
	if !slices.Equal(fetched, []cid.Cid{c}) || closed != 1 {
		t.Fatalf("fetched %v, closed %d; want the dataset fetched once, its open closed", fetched, closed)
	}
	if !f.held()[c] {
		t.Fatal("not recorded as pinned after Pin")
	}
	if res, err := f.k.Pin(t.Context(), c); err != nil || !res.Local || res.Fetching || len(fetched) != 1 {
		t.Fatalf("Pin of a pinned dataset: %+v, %v, fetched %d; want local, nothing fetched", res, err, len(fetched))
	}
	f.clk.Advance(48 * time.Hour)
	if res := f.gc(); len(res.Removed) != 0 {
		t.Fatalf("GC removed pinned %v", removedCIDs(res))
	}
	if err := f.k.Unpin(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if f.held()[c] {
		t.Fatal("recorded as pinned after Unpin")
	}
	// Unpinned counts as just read: the TTL starts now.
	if res := f.gc(); len(res.Removed) != 0 {
		t.Fatalf("GC right after Unpin removed %v", removedCIDs(res))
	}
	f.clk.Advance(2 * time.Hour)
	if res := f.gc(); len(res.Removed) != 1 {
		t.Fatalf("GC an expiry after Unpin removed %v", removedCIDs(res))
	}
	if err := f.k.Unpin(t.Context(), c); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Unpin of a dataset not held: %v; want ErrNotFound", err)
	}
}

// Pinning a dataset the fetch cannot find records nothing.
func TestPinNotFoundRecordsNothing(t *testing.T) {
	missing := errors.New("no provider")
	f := memoryFixture(t, 0, Config{Fetch: func(context.Context, cid.Cid) (io.Closer, error) { return nil, missing }})
	c := store.NewBlock(store.CodecManifest, []byte("nowhere")).CID
	if _, err := f.k.Pin(t.Context(), c); !errors.Is(err, missing) {
		t.Fatalf("Pin: %v; want the fetch's error", err)
	}
	if len(f.held()) != 0 {
		t.Fatalf("records after a failed Pin: %v", f.held())
	}
}

// Reads record their access at most once per accessInterval, and never on
// a pinned dataset.
func TestAccessWrittenAtMostOncePerInterval(t *testing.T) {
	f := memoryFixture(t, 0, Config{})
	c := f.cached(data(7, 2), "")
	mb, err := f.st.Get(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	start := f.clk.Now()
	last := func() time.Time {
		t.Helper()
		r, err := f.record(c)
		if err != nil {
			t.Fatal(err)
		}
		return r.LastAccess
	}
	f.clk.Advance(30 * time.Second)
	f.k.Accessed(t.Context(), mb, cid.Undef, false)
	if got := last(); !got.Equal(start) {
		t.Fatalf("a read 30s after the last write moved the access time to %v", got)
	}
	f.clk.Advance(time.Minute)
	f.k.Accessed(t.Context(), mb, cid.Undef, false)
	if got, want := last(), start.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("access time %v after a read 90s later; want %v", got, want)
	}
}

// A manifest from the network is stored cached with its record, unless
// the dataset is held already: a pinned copy stays pinned.
func TestArrivedStoresCachedUnlessHeld(t *testing.T) {
	f := memoryFixture(t, 0, Config{})
	other := memoryFixture(t, 0, Config{})
	contents := data(9, 3)
	c := other.pinned(contents, "")
	mb, err := other.st.Get(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	r, err := other.record(c)
	if err != nil {
		t.Fatal(err)
	}
	f.k.Arrived(t.Context(), mb, r.Tree)
	if got, err := f.record(c); err != nil || got.Pinned || !got.Tree.Equals(r.Tree) || !got.LastAccess.Equal(f.clk.Now()) {
		t.Fatalf("record of an arrived manifest: %+v, %v; want cached, read now, naming its tree", got, err)
	}

	p := f.pinned(data(11, 2), "")
	pb, err := f.st.Get(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	f.k.Arrived(t.Context(), pb, cid.Undef)
	if !f.held()[p] {
		t.Fatal("a pinned dataset whose manifest arrived again is no longer pinned")
	}
}

// A network reader of a removed dataset brings its manifest back, cached;
// a local reader does not.
func TestAccessedRestoresRemovedForNetworkReaders(t *testing.T) {
	f := memoryFixture(t, 0, Config{})
	c := f.cached(data(12, 2), "")
	mb, err := f.st.Get(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.record(c)
	if err := f.k.Remove(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(2 * accessInterval)
	f.k.Accessed(t.Context(), mb, r.Tree, false)
	if len(f.held()) != 0 {
		t.Fatal("a local reader brought a removed dataset back")
	}
	f.clk.Advance(2 * accessInterval)
	f.k.Accessed(t.Context(), mb, r.Tree, true)
	if got, err := f.record(c); err != nil || got.Pinned || !got.Tree.Equals(r.Tree) {
		t.Fatalf("record after a network read of the removed dataset: %+v, %v; want cached", got, err)
	}
}
