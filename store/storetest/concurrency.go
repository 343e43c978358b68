package storetest

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshfs/meshfs/store"
)

const workers = 8

var concurrencyCases = []testCase{
	{name: "ConcurrentPutGet", run: func(t *testing.T, s store.BlockStore) {
		// Worker w puts blocks [16w, 16w+24): the last 8 are also the next
		// worker's first 8, so identical Puts race with each other.
		const per, overlap = 16, 8
		blocks := make([]store.Block, workers*per+overlap)
		for i := range blocks {
			blocks[i] = newBlock(store.CodecBlock, uint64(i))
		}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				mine := blocks[w*per : w*per+per+overlap]
				for i, b := range mine {
					if err := s.Put(t.Context(), b); err != nil {
						t.Errorf("worker %d: Put: %v", w, err)
						return
					}
					got, err := s.Get(t.Context(), b.CID)
					if err != nil || !bytes.Equal(got.Data, b.Data) {
						t.Errorf("worker %d: Get of own block %d: %v or bytes differ", w, i, err)
						return
					}
					// Read another worker's block, which may not be there yet.
					o := blocks[(w*per+i+3*per)%len(blocks)]
					got, err = s.Get(t.Context(), o.CID)
					if err == nil && !bytes.Equal(got.Data, o.Data) {
						t.Errorf("worker %d: Get of %s: bytes differ", w, o.CID)
					} else if err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Errorf("worker %d: Get of %s: %v", w, o.CID, err)
					}
				}
			})
		}
		wg.Wait()
		for _, b := range blocks {
			checkBlock(t, s, b)
		}
		checkUsage(t, s, usageOf(0, blocks...))
	}},
	{name: "ConcurrentPutsRespectQuota", quota: func() uint64 { return 10 * blockSize }, run: func(t *testing.T, s store.BlockStore) {
		const per = 4 // 32 distinct blocks compete for room for 10
		var stored, refused atomic.Int64
		var mu sync.Mutex
		var held []store.Block
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range per {
					b := newBlock(store.CodecBlock, uint64(w*per+i))
					switch err := s.Put(t.Context(), b); {
					case err == nil:
						stored.Add(1)
						mu.Lock()
						held = append(held, b)
						mu.Unlock()
					case errors.Is(err, store.ErrQuotaExceeded):
						refused.Add(1)
					default:
						t.Errorf("Put: %v", err)
					}
				}
			})
		}
		wg.Wait()
		if stored.Load() != 10 || refused.Load() != workers*per-10 {
			t.Fatalf("%d Puts stored and %d refused; want 10 and %d", stored.Load(), refused.Load(), workers*per-10)
		}
		for _, b := range held {
			checkBlock(t, s, b)
		}
		checkUsage(t, s, usageOf(10*blockSize, held...))
	}},
	{name: "ConcurrentLeaves", run: func(t *testing.T, s store.BlockStore) {
		shared := newBlock(store.CodecBlock, 1)
		mustPut(t, s, shared)
		pin := store.Leaf{Tree: tree(1000), Index: 0, Block: shared.CID}
		mustPutLeaf(t, s, pin)

		const per = 16
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range uint64(per) {
					l := store.Leaf{Tree: tree(uint64(w)), Index: i, Block: shared.CID, Proof: []byte{byte(w), byte(i)}}
					if err := s.PutLeaf(t.Context(), l); err != nil {
						t.Errorf("worker %d: PutLeaf: %v", w, err)
						return
					}
					// Referenced all along: Delete must never take it.
					if err := s.Delete(t.Context(), shared.CID); err != nil {
						t.Errorf("worker %d: Delete: %v", w, err)
					}
					got, b, err := s.GetLeaf(t.Context(), l.Tree, i)
					if err != nil || !bytes.Equal(got.Proof, l.Proof) || !bytes.Equal(b.Data, shared.Data) {
						t.Errorf("worker %d: GetLeaf %d: %v or proof/bytes differ", w, i, err)
					}
				}
				for i := range uint64(per) {
					if err := s.DeleteLeaf(t.Context(), tree(uint64(w)), i); err != nil {
						t.Errorf("worker %d: DeleteLeaf: %v", w, err)
					}
				}
			})
		}
		wg.Wait()
		checkBlock(t, s, shared)
		checkUsage(t, s, usageOf(0, shared))
		deleteLeaf(t, s, pin.Tree, pin.Index)
		checkAbsent(t, s, shared.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "ConcurrentPutLeafBlock", run: func(t *testing.T, s store.BlockStore) {
		// Fetches of the same block at many positions, in several trees,
		// race: as many references as positions, and the block once.
		b := newBlock(store.CodecBlock, 1)
		const per = 16
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range uint64(per) {
					l := store.Leaf{Tree: tree(uint64(w % 2)), Index: i, Block: b.CID, Proof: []byte{byte(w)}}
					if err := s.PutLeafBlock(t.Context(), l, b); err != nil {
						t.Errorf("worker %d: PutLeafBlock: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Every position's proof is one byte, whoever wrote it last.
		checkUsage(t, s, store.Usage{Blocks: 1, UsedBytes: uint64(len(b.Data)) + 2*per})
		// One reference per position: the block outlives every leaf but
		// the last, and goes with it.
		for tr := range uint64(2) {
			for i := range uint64(per) {
				if tr == 1 && i == per-1 {
					continue
				}
				deleteLeaf(t, s, tree(tr), i)
			}
		}
		checkBlock(t, s, b)
		deleteLeaf(t, s, tree(1), per-1)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "ConcurrentPutDeleteSameBlocks", run: func(t *testing.T, s store.BlockStore) {
		// Writers and deleters of the same few blocks race, as an upload
		// racing garbage collection does. Whatever interleaving wins, a
		// block is either held with its bytes or absent, and usage counts
		// exactly what is held.
		blocks := []store.Block{newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2), newBlock(store.CodecManifest, 1)}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range 24 {
					b := blocks[(w+i)%len(blocks)]
					var err error
					if (w+i)%3 == 0 {
						err = s.Delete(t.Context(), b.CID)
					} else {
						err = s.Put(t.Context(), b)
					}
					if err != nil {
						t.Errorf("worker %d: %v", w, err)
						return
					}
					got, err := s.Get(t.Context(), b.CID)
					if err == nil && !bytes.Equal(got.Data, b.Data) {
						t.Errorf("worker %d: Get of %s: bytes differ", w, b.CID)
					} else if err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Errorf("worker %d: Get of %s: %v", w, b.CID, err)
					}
				}
			})
		}
		wg.Wait()
		var held []store.Block
		for _, b := range blocks {
			if ok, err := s.Has(t.Context(), b.CID); err != nil {
				t.Fatalf("Has: %v", err)
			} else if ok {
				checkBlock(t, s, b)
				held = append(held, b)
			} else {
				checkAbsent(t, s, b.CID)
			}
		}
		checkUsage(t, s, usageOf(0, held...))
		// Whatever was left, it can be put and deleted again.
		mustPut(t, s, blocks...)
		for _, b := range blocks {
			if err := s.Delete(t.Context(), b.CID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			checkAbsent(t, s, b.CID)
		}
		checkUsage(t, s, usageOf(0))
	}},
	{name: "GetLeafRacesDeleteLeaf", run: func(t *testing.T, s store.BlockStore) {
		// A reader of a leaf whose last reference is being dropped gets the
		// leaf with its block's bytes, or ErrNotFound: never a leaf without
		// its block, nor any other error.
		const rounds = 32
		var wg sync.WaitGroup
		for r := range uint64(rounds) {
			b := newBlock(store.CodecBlock, 100+r)
			mustPut(t, s, b)
			mustPutLeaf(t, s, store.Leaf{Tree: tree(r), Index: 0, Block: b.CID})
			wg.Go(func() {
				if err := s.DeleteLeaf(t.Context(), tree(r), 0); err != nil {
					t.Errorf("DeleteLeaf: %v", err)
				}
			})
			for range 2 {
				wg.Go(func() {
					_, got, err := s.GetLeaf(t.Context(), tree(r), 0)
					if err == nil && !bytes.Equal(got.Data, b.Data) {
						t.Errorf("GetLeaf round %d: bytes differ", r)
					} else if err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Errorf("GetLeaf round %d: %v; want the block or ErrNotFound", r, err)
					}
				})
			}
		}
		wg.Wait()
		checkUsage(t, s, usageOf(0))
	}},
}
