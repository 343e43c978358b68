package repo

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshfs/meshfs/store"
)

// TestCompaction fills several packs, deletes 70% of the blocks (some by
// Delete, some by dropping their last leaf), and compacts: the packs shrink
// to about what is live, usage does not move, and every remaining block
// and leaf reads back, before and after a reopen.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir, false)
	ctx := t.Context()
	const n = 200
	for i := range uint64(n) {
		b := block(i, 64<<10)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := s.PutLeaf(ctx, store.Leaf{Tree: tree(1).CID, Index: i, Block: b.CID, Proof: []byte{byte(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	full := diskBytes(t, dir)
	kept := func(i uint64) bool { return i%10 >= 7 }
	for i := range uint64(n) {
		if kept(i) {
			continue
		}
		var err error
		if i%3 == 0 {
			err = s.DeleteLeaf(ctx, tree(1).CID, i)
		} else {
			err = s.Delete(ctx, block(i, 64<<10).CID)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	checkConsistent(t, s)
	before, _ := s.Usage(ctx)
	if diskBytes(t, dir) != full {
		t.Fatal("deletes changed the packs on disk")
	}

	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s)
	after, _ := s.Usage(ctx)
	disk := diskBytes(t, dir)
	t.Logf("packs: %d bytes full, %d after deleting 70%% and compacting; %d live", full, disk, after.UsedBytes)
	// Only the active pack may still hold dead records.
	if after != before || disk > after.UsedBytes+2*smallPacks {
		t.Fatalf("after Compact: usage %+v (was %+v), %d bytes of packs for %d live", after, before, disk, after.UsedBytes)
	}
	check := func() {
		t.Helper()
		for i := range uint64(n) {
			b := block(i, 64<<10)
			if !kept(i) {
				if ok, _ := s.Has(ctx, b.CID); ok {
					t.Fatalf("deleted block %d is held", i)
				}
				continue
			}
			mustGet(t, s, b)
			if i%3 == 0 {
				leaf, got, err := s.GetLeaf(ctx, tree(1).CID, i)
				if err != nil || !bytes.Equal(got.Data, b.Data) || !bytes.Equal(leaf.Proof, []byte{byte(i)}) {
					t.Fatalf("GetLeaf %d after Compact: %v", i, err)
				}
			}
		}
	}
	check()
	r, err := s.Verify(ctx)
	if err != nil || len(r.Damaged) > 0 || r.Blocks != after.Blocks {
		t.Fatalf("Verify = %+v, %v", r, err)
	}
	s.Close()

	s = openSmall(t, dir, false)
	checkConsistent(t, s)
	checkTrimmed(t, s)
	if u, _ := s.Usage(ctx); u != after {
		t.Fatalf("Usage after reopen = %+v; want %+v", u, after)
	}
	check()
	// The references moved with the blocks: dropping the leaves frees them.
	for i := uint64(0); i < n; i += 3 {
		if kept(i) {
			if err := s.DeleteLeaf(ctx, tree(1).CID, i); err != nil {
				t.Fatal(err)
			}
			if ok, _ := s.Has(ctx, block(i, 64<<10).CID); ok {
				t.Fatalf("block %d held after its last leaf went", i)
			}
		}
	}
	checkConsistent(t, s)
}

// TestBackgroundCompaction deletes most blocks and waits for the packs to
// shrink by themselves.
func TestBackgroundCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir, true)
	ctx := t.Context()
	const n = 100
	for i := range uint64(n) {
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	full := diskBytes(t, dir)
	for i := range uint64(n) {
		if i%5 != 0 {
			if err := s.Delete(ctx, block(i, 64<<10).CID); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for diskBytes(t, dir) > full/2 {
		if time.Now().After(deadline) {
			t.Fatalf("packs still take %d bytes of %d after deleting 80%%", diskBytes(t, dir), full)
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkConsistent(t, s)
	for i := uint64(0); i < n; i += 5 {
		mustGet(t, s, block(i, 64<<10))
	}
}

// TestCompactRacesReadsAndWrites compacts over and over while other
// goroutines read, put and delete the same blocks: a reader sees a block's
// bytes or ErrNotFound, never a stale or failed read, whatever pack the
// block is moved out of meanwhile.
func TestCompactRacesReadsAndWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t), packBytes: 4 * (64<<10 + 64), noAutoCompact: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	const n = 64
	for i := range uint64(n) {
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		reads atomic.Int64
	)
	for w := range uint64(3) {
		wg.Go(func() {
			for i := w; !stop.Load(); i = (i + 7) % n {
				b := block(i, 64<<10)
				got, err := s.Get(ctx, b.CID)
				switch {
				case err == nil && !bytes.Equal(got.Data, b.Data):
					t.Errorf("Get %d: bytes differ", i)
				case err != nil && !errors.Is(err, store.ErrNotFound):
					t.Errorf("Get %d: %v", i, err)
				}
				reads.Add(1)
				// A read's ErrNotFound (another goroutine deleted the block)
				// is not a write's failure.
				var werr error
				if i%4 == w {
					werr = s.Delete(ctx, b.CID)
				} else if i%4 == 3 {
					werr = s.Put(ctx, b)
				}
				if err = werr; err != nil {
					t.Errorf("write %d: %v", i, err)
				}
			}
		})
	}
	for range 40 {
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	checkConsistent(t, s)
	t.Logf("%d reads, %d packs left", reads.Load(), len(packFiles(t, s)))
}

// TestSyncMode runs the write path with fsyncs and reopens.
func TestSyncMode(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t), Sync: true, packBytes: smallPacks})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for i := range uint64(40) {
		if err := s.Put(ctx, block(i, 64<<10)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Delete(ctx, block(i, 64<<10).CID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s)
	s.Close()
	s = openSmall(t, dir, false)
	checkConsistent(t, s)
	for i := uint64(1); i < 40; i += 2 {
		mustGet(t, s, block(i, 64<<10))
	}
}
