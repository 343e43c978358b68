package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/meshfs/meshfs/store"
)

// batchOf returns s as a BatchStore, skipping the test when it is none.
func batchOf(t *testing.T, s store.BlockStore) store.BatchStore {
	t.Helper()
	b, ok := s.(store.BatchStore)
	if !ok {
		t.Skip("the store has no batches")
	}
	return b
}

// leavesOf names blocks[i] at index first+i of tree(seed), each with a
// proof of its own.
func leavesOf(seed, first uint64, blocks ...store.Block) []store.Leaf {
	leaves := make([]store.Leaf, len(blocks))
	for i, b := range blocks {
		leaves[i] = store.Leaf{Tree: tree(seed), Index: first + uint64(i), Block: b.CID, Proof: []byte{byte(i), 'p'}}
	}
	return leaves
}

var batchCases = []testCase{
	{name: "PutLeafBlocksHoldsEveryBlockAndLeaf", run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		held := newBlock(store.CodecBlock, 1)
		mustPut(t, s, held)
		a, b := newBlock(store.CodecBlock, 2), newBlock(store.CodecBlock, 3)
		// A block held before, a new one twice, and a padded one.
		padded := paddedBlock(4, 100)
		blocks := []store.Block{held, a, b, a, padded}
		leaves := leavesOf(1, 0, blocks...)
		if err := bs.PutLeafBlocks(t.Context(), leaves, blocks); err != nil {
			t.Fatalf("PutLeafBlocks: %v", err)
		}
		for i, l := range leaves {
			checkLeaf(t, s, l, blocks[i])
		}
		checkUsage(t, s, withProofs(usageOf(0, held, a, b, padded), leaves...))
		// Each leaf is a reference: the block named twice goes with the
		// second of its leaves.
		deleteLeaf(t, s, tree(1), 1)
		checkBlock(t, s, a)
		deleteLeaf(t, s, tree(1), 3)
		checkAbsent(t, s, a.CID)
	}},
	{name: "PutLeafBlocksKeepsNoReferenceToTheBytes", run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		blocks := []store.Block{newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)}
		want := make([]store.Block, len(blocks))
		for i, b := range blocks {
			want[i] = store.Block{CID: b.CID, Data: append([]byte(nil), b.Data...)}
		}
		if err := bs.PutLeafBlocks(t.Context(), leavesOf(1, 0, blocks...), blocks); err != nil {
			t.Fatalf("PutLeafBlocks: %v", err)
		}
		for _, b := range blocks {
			for i := range b.Data {
				b.Data[i] = 0xEE // the caller reuses its buffers
			}
		}
		for _, b := range want {
			checkBlock(t, s, b)
		}
	}},
	{name: "PutLeafBlocksThatFailsWritesNothing", run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		blocks := []store.Block{newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2), newBlock(store.CodecBlock, 3)}
		leaves := leavesOf(1, 0, blocks...)
		leaves[2].Block = blocks[0].CID // names another block than its own
		if err := bs.PutLeafBlocks(t.Context(), leaves, blocks); !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("PutLeafBlocks with a leaf naming another block: %v; want ErrInvalidBlock", err)
		}
		if err := bs.PutLeafBlocks(cancelled(), leavesOf(1, 0, blocks...), blocks); !errors.Is(err, context.Canceled) {
			t.Fatalf("PutLeafBlocks with a cancelled context: %v; want context.Canceled", err)
		}
		for i, b := range blocks {
			checkAbsent(t, s, b.CID)
			checkNoLeaf(t, s, tree(1), uint64(i))
		}
		checkUsage(t, s, store.Usage{})
	}},
	{name: "PutLeafBlocksOverQuotaWritesNothing", quota: func() uint64 { return 3*blockSize + 100 }, run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		q := 3*blockSize + 100
		var blocks []store.Block
		for i := range uint64(4) {
			blocks = append(blocks, newBlock(store.CodecBlock, i))
		}
		if err := bs.PutLeafBlocks(t.Context(), leavesOf(1, 0, blocks...), blocks); !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("PutLeafBlocks of 4 blocks into room for 3: %v; want ErrQuotaExceeded", err)
		}
		for _, b := range blocks {
			checkAbsent(t, s, b.CID)
		}
		checkUsage(t, s, store.Usage{QuotaBytes: q})
		leaves := leavesOf(1, 0, blocks[:3]...)
		if err := bs.PutLeafBlocks(t.Context(), leaves, blocks[:3]); err != nil {
			t.Fatalf("PutLeafBlocks of 3 blocks into room for 3: %v", err)
		}
		checkUsage(t, s, withProofs(usageOf(q, blocks[:3]...), leaves...))
	}},
	{name: "MoveLeavesPassesTheReferences", run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		a, b, c := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2), newBlock(store.CodecBlock, 3)
		staging := leavesOf(1, 0, a, b, c)
		if err := bs.PutLeafBlocks(t.Context(), staging, []store.Block{a, b, c}); err != nil {
			t.Fatalf("PutLeafBlocks: %v", err)
		}
		// Index 2 of the new tree names another block than the leaf it
		// takes the place of: c loses its last reference, a gains one.
		moved := leavesOf(2, 0, a, b, a)
		for i := range moved {
			moved[i].Proof = []byte("the real proof")
		}
		// Index 1 of the new tree is held already, by the leaf that moves
		// there: the staging leaf's reference goes, b keeps that one.
		mustPutLeaf(t, s, moved[1])
		if err := bs.MoveLeaves(t.Context(), tree(1), moved); err != nil {
			t.Fatalf("MoveLeaves: %v", err)
		}
		for i, l := range moved {
			checkLeaf(t, s, l, []store.Block{a, b, a}[i])
			checkNoLeaf(t, s, tree(1), uint64(i))
		}
		checkAbsent(t, s, c.CID)
		checkUsage(t, s, withProofs(usageOf(0, a, b), moved...))
		deleteLeaf(t, s, tree(2), 0)
		checkBlock(t, s, a)
		deleteLeaf(t, s, tree(2), 2)
		checkAbsent(t, s, a.CID)
		deleteLeaf(t, s, tree(2), 1)
		checkUsage(t, s, store.Usage{})
	}},
	{name: "MoveLeavesRecordsEachInOrder", run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, a, b)
		leaves := append(leavesOf(1, 0, a, b), leavesOf(2, 0, a)...)
		// The last replaces the first: a loses that reference, keeps the
		// one of tree 2. Tree 3 has no leaves to move.
		last := store.Leaf{Tree: tree(1), Index: 0, Block: b.CID, Proof: []byte("last")}
		if err := bs.MoveLeaves(t.Context(), tree(3), append(leaves, last)); err != nil {
			t.Fatalf("MoveLeaves: %v", err)
		}
		checkLeaf(t, s, last, b)
		checkLeaf(t, s, leaves[1], b)
		checkLeaf(t, s, leaves[2], a)
		checkUsage(t, s, withProofs(usageOf(0, a, b), leaves[1], leaves[2], last))
		deleteLeaf(t, s, tree(2), 0)
		checkAbsent(t, s, a.CID)
		deleteLeaf(t, s, tree(1), 0)
		checkBlock(t, s, b)
		deleteLeaf(t, s, tree(1), 1)
		checkAbsent(t, s, b.CID)
	}},
	{name: "MoveLeavesThatFailsWritesNothing", run: func(t *testing.T, s store.BlockStore) {
		bs := batchOf(t, s)
		a, missing := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, a)
		staging := leavesOf(1, 0, a)
		mustPutLeaf(t, s, staging...)
		leaves := leavesOf(2, 0, a, missing, a)
		if err := bs.MoveLeaves(t.Context(), tree(1), leaves); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("MoveLeaves with a leaf of a block not held: %v; want ErrNotFound", err)
		}
		if err := bs.MoveLeaves(cancelled(), tree(1), leaves[:1]); !errors.Is(err, context.Canceled) {
			t.Fatalf("MoveLeaves with a cancelled context: %v; want context.Canceled", err)
		}
		for i := range leaves {
			checkNoLeaf(t, s, tree(2), uint64(i))
		}
		checkLeaf(t, s, staging[0], a)
		checkUsage(t, s, withProofs(usageOf(0, a), staging...))
	}},
}
