package dataset

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// sourceFetcher serves blocks from a store standing for the network,
// keeping each in the local store as the exchange does, and records which
// positions were fetched.
type sourceFetcher struct {
	src, local store.BlockStore
	mu         sync.Mutex
	fetched    map[uint64]bool
}

func (f *sourceFetcher) Get(ctx context.Context, c cid.Cid) (store.Block, error) {
	b, err := f.src.Get(ctx, c)
	if err == nil {
		err = f.local.Put(ctx, b)
	}
	return b, err
}

func (f *sourceFetcher) GetLeaf(ctx context.Context, tree cid.Cid, i uint64, prio store.Priority) (store.Leaf, store.Block, error) {
	f.mu.Lock()
	f.fetched[i] = true
	f.mu.Unlock()
	l, b, err := f.src.GetLeaf(ctx, tree, i)
	if err == nil {
		if err = f.local.Put(ctx, b); err == nil {
			err = f.local.PutLeaf(ctx, l)
		}
	}
	return l, b, err
}

// A sequential reader of a protected dataset has the blocks after it
// fetched ahead, but never the parity rows past the end of the file: they
// are for decoding, and fetching them only wastes the link.
func TestReadAheadStopsAtTheFilesEnd(t *testing.T) {
	src := store.NewMemory(0)
	data := randomBytes(7, 40*testBS+100)
	c := upload(t, src, data, 4, 2)
	local := store.NewMemory(0)
	f := &sourceFetcher{src: src, local: local, fetched: map[uint64]bool{}}
	ctx := context.Background()
	d, err := Open(ctx, c, Config{Store: store.NewNetworkStore(local, f), Local: local, Prefetch: 64})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.Reader(ctx))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want the %d bytes uploaded", len(got), err, len(data))
	}
	// Read-ahead runs in the background: wait until it is done.
	d.ahead.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := d.Manifest.DataBlocks()
	for i := range f.fetched {
		if i >= n {
			t.Errorf("block %d fetched: past the file's %d blocks (parity)", i, n)
		}
	}
	if uint64(len(f.fetched)) != n {
		t.Errorf("%d blocks fetched; want the file's %d", len(f.fetched), n)
	}
}

// stallFetcher serves the first block and holds every other fetch until
// its context ends, counting the fetches still running.
type stallFetcher struct {
	sourceFetcher
	running sync.WaitGroup
	started chan struct{}
	once    sync.Once
}

func (f *stallFetcher) GetLeaf(ctx context.Context, tree cid.Cid, i uint64, prio store.Priority) (store.Leaf, store.Block, error) {
	if i == 0 {
		return f.sourceFetcher.GetLeaf(ctx, tree, i, prio)
	}
	f.once.Do(func() { close(f.started) })
	<-ctx.Done()
	return store.Leaf{}, store.Block{}, ctx.Err()
}

// Close ends the fetches ahead of a reader and releases what they held,
// before it returns: a dataset nobody reads any more is no longer kept
// from garbage collection by fetches for nobody.
func TestCloseEndsReadAhead(t *testing.T) {
	src := store.NewMemory(0)
	data := randomBytes(8, 8*testBS)
	c := upload(t, src, data, 4, 0)
	local := store.NewMemory(0)
	f := &stallFetcher{sourceFetcher: sourceFetcher{src: src, local: local, fetched: map[uint64]bool{}}, started: make(chan struct{})}
	var holds atomic.Int64 // holds not released
	hold := func(context.Context) (func(), error) {
		holds.Add(1)
		return func() { holds.Add(-1) }, nil
	}
	ctx := context.Background()
	d, err := Open(ctx, c, Config{Store: store.NewNetworkStore(local, f), Local: local, Prefetch: 4, Hold: hold})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, testBS)
	if n, err := d.ReadAt(ctx, p, 0); n != testBS || err != nil || !bytes.Equal(p, data[:testBS]) {
		t.Fatalf("ReadAt 0: %d, %v; want the first block", n, err)
	}
	<-f.started // a fetch ahead is waiting on the network
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := holds.Load(); n != 0 {
		t.Errorf("%d holds on the dataset after Close; want none", n)
	}
}

// Release ends the open's claim on the dataset at once and only once, and
// leaves the reader reading ahead: the mount releases each reader it keeps,
// and its sequential readers still have the blocks after them fetched.
func TestReleasedReaderReadsAhead(t *testing.T) {
	src := store.NewMemory(0)
	data := randomBytes(9, 12*testBS)
	c := upload(t, src, data, 4, 0)
	local := store.NewMemory(0)
	f := &sourceFetcher{src: src, local: local, fetched: map[uint64]bool{}}
	var released atomic.Int32
	ctx := context.Background()
	d, err := Open(ctx, c, Config{Store: store.NewNetworkStore(local, f), Local: local, Prefetch: 4,
		Release: func() { released.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	d.Release()
	if n := released.Load(); n != 1 {
		t.Fatalf("Release released the open %d times; want once", n)
	}
	p := make([]byte, testBS)
	if n, err := d.ReadAt(ctx, p, 0); n != testBS || err != nil || !bytes.Equal(p, data[:testBS]) {
		t.Fatalf("ReadAt 0 after Release: %d, %v; want the first block", n, err)
	}
	d.ahead.Wait()
	for i := uint64(1); i <= 4; i++ {
		if has, err := local.HasLeaf(ctx, d.Manifest.TreeCID, i); err != nil || !has {
			t.Errorf("block %d after a read of block 0: held %v, %v; want it fetched ahead", i, has, err)
		}
	}
	d.pmu.Lock()
	idle := d.aheadCtx == nil
	d.pmu.Unlock()
	if !idle {
		t.Error("the fetches ahead have ended, but their context is still tied to Config.Life")
	}
	d.Release()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("Release, Release and Close released the open %d times; want once", n)
	}
}
