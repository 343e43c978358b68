package storetest

import (
	"errors"
	"testing"

	"github.com/meshfs/meshfs/store"
)

var blockCases = []testCase{
	{name: "PutGetHas", run: func(t *testing.T, s store.BlockStore) {
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecManifest, 2)
		checkUsage(t, s, usageOf(0))
		mustPut(t, s, a, b)
		checkBlock(t, s, a)
		checkBlock(t, s, b)
		checkAbsent(t, s, newBlock(store.CodecBlock, 3).CID)
		checkUsage(t, s, usageOf(0, a, b))
	}},
	{name: "PutSmallAndEmptyBlocks", run: func(t *testing.T, s store.BlockStore) {
		empty := store.NewBlock(store.CodecBlock, []byte{})
		small := store.NewBlock(store.CodecManifest, []byte("manifest"))
		mustPut(t, s, empty, small)
		checkBlock(t, s, empty)
		checkBlock(t, s, small)
		checkUsage(t, s, usageOf(0, empty, small))
	}},
	{name: "PutIsIdempotent", quota: func() uint64 { return 2 * blockSize }, run: func(t *testing.T, s store.BlockStore) {
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, a, b)
		// The store is now full: putting what it holds must still succeed.
		mustPut(t, s, a, b, a)
		checkUsage(t, s, usageOf(2*blockSize, a, b))
		checkBlock(t, s, a)
	}},
	{name: "PutRejectsMismatchedBytes", run: func(t *testing.T, s store.BlockStore) {
		good := newBlock(store.CodecBlock, 1)
		bad := store.Block{CID: good.CID, Data: append([]byte(nil), good.Data...)}
		bad.Data[blockSize/2] ^= 1
		if err := s.Put(t.Context(), bad); !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("Put of altered bytes: %v; want ErrInvalidBlock", err)
		}
		// Intact bytes under another block's CID do not match either.
		other := newBlock(store.CodecManifest, 2)
		if err := s.Put(t.Context(), store.Block{CID: other.CID, Data: good.Data}); !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("Put under another block's CID: %v; want ErrInvalidBlock", err)
		}
		// A block made by NewBlock whose Data was then swapped for other
		// bytes is hashed again, not trusted for its origin.
		swapped := newBlock(store.CodecBlock, 3)
		swapped.Data = bad.Data
		if err := s.Put(t.Context(), swapped); !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("Put of a block whose bytes were swapped: %v; want ErrInvalidBlock", err)
		}
		checkAbsent(t, s, good.CID)
		checkAbsent(t, s, other.CID)
		checkAbsent(t, s, swapped.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "QuotaExceeded", quota: func() uint64 { return 3 * blockSize }, run: func(t *testing.T, s store.BlockStore) {
		quota := 3 * blockSize
		held := []store.Block{newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2), newBlock(store.CodecBlock, 3)}
		mustPut(t, s, held...)
		extra := newBlock(store.CodecBlock, 4)
		if err := s.Put(t.Context(), extra); !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("Put over quota: %v; want ErrQuotaExceeded", err)
		}
		checkAbsent(t, s, extra.CID)
		checkUsage(t, s, usageOf(quota, held...))

		// One byte over fails too; freeing space makes room again.
		one := store.NewBlock(store.CodecBlock, []byte{1})
		if err := s.Put(t.Context(), one); !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("Put of 1 byte into a full store: %v; want ErrQuotaExceeded", err)
		}
		if err := s.Delete(t.Context(), held[0].CID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		mustPut(t, s, extra)
		checkBlock(t, s, extra)
		checkUsage(t, s, usageOf(quota, held[1], held[2], extra))
	}},
	{name: "ProofsCountAgainstQuota", quota: func() uint64 { return blockSize + 2048 }, run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		// A leaf without a proof costs nothing; proofs cost their bytes.
		bare := store.Leaf{Tree: tree(1), Index: 0, Block: b.CID}
		first := store.Leaf{Tree: tree(1), Index: 1, Block: b.CID, Proof: make([]byte, 1024)}
		second := store.Leaf{Tree: tree(1), Index: 2, Block: b.CID, Proof: make([]byte, 1000)}
		mustPutLeaf(t, s, bare, first, second)
		want := withProofs(usageOf(blockSize+2048, b), first, second)
		checkUsage(t, s, want)
		// A third does not fit, as a leaf of its own or with its block;
		// nothing of either is written.
		third := store.Leaf{Tree: tree(1), Index: 3, Block: b.CID, Proof: make([]byte, 100)}
		if err := s.PutLeaf(t.Context(), third); !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("PutLeaf over the quota: %v; want ErrQuotaExceeded", err)
		}
		if err := s.PutLeafBlock(t.Context(), third, b); !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("PutLeafBlock over the quota: %v; want ErrQuotaExceeded", err)
		}
		checkNoLeaf(t, s, tree(1), 3)
		checkUsage(t, s, want)
		// A smaller proof in place of a larger one frees the difference,
		// and deleting a leaf frees its proof.
		first.Proof = make([]byte, 24)
		mustPutLeaf(t, s, first)
		checkUsage(t, s, withProofs(usageOf(blockSize+2048, b), first, second))
		mustPutLeaf(t, s, third)
		deleteLeaf(t, s, tree(1), 2)
		checkUsage(t, s, withProofs(usageOf(blockSize+2048, b), first, third))
	}},
	{name: "DeleteUnreferenced", run: func(t *testing.T, s store.BlockStore) {
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, a, b)
		if err := s.Delete(t.Context(), a.CID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		checkAbsent(t, s, a.CID)
		checkBlock(t, s, b)
		checkUsage(t, s, usageOf(0, b))
		// Deleting what is not held, again or ever, is not an error.
		for _, c := range []store.Block{a, newBlock(store.CodecBlock, 3)} {
			if err := s.Delete(t.Context(), c.CID); err != nil {
				t.Fatalf("Delete of a block not held: %v", err)
			}
		}
		checkUsage(t, s, usageOf(0, b))
		// A deleted block can be stored again.
		mustPut(t, s, a)
		checkBlock(t, s, a)
		checkUsage(t, s, usageOf(0, a, b))
	}},
}
