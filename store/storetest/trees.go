package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

func listedTrees(t *testing.T, s store.BlockStore) []string {
	t.Helper()
	var got []string
	if err := s.ForEachTree(t.Context(), func(c cid.Cid) error {
		got = append(got, c.String())
		return nil
	}); err != nil {
		t.Fatalf("ForEachTree: %v", err)
	}
	slices.Sort(got)
	return got
}

func sortedStrings(cids ...cid.Cid) []string {
	var out []string
	for _, c := range cids {
		out = append(out, c.String())
	}
	slices.Sort(out)
	return out
}

var treeCases = []testCase{
	{name: "ForEachTreeListsEachTreeOnce", run: func(t *testing.T, s store.BlockStore) {
		if got := listedTrees(t, s); len(got) != 0 {
			t.Fatalf("an empty store lists trees %v", got)
		}
		b := newBlock(store.CodecBlock, 1)
		for i := range uint64(3000) { // more than one batch of a store that batches
			mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: i, Block: b.CID}, b)
		}
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(2), Index: 1 << 63, Block: b.CID}, b)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(3), Index: 0, Block: b.CID}, b)
		if got, want := listedTrees(t, s), sortedStrings(tree(1), tree(2), tree(3)); !slices.Equal(got, want) {
			t.Fatalf("ForEachTree listed %v; want %v", got, want)
		}
		stop := errors.New("stop")
		if err := s.ForEachTree(t.Context(), func(cid.Cid) error { return stop }); !errors.Is(err, stop) {
			t.Fatalf("ForEachTree with a failing fn: %v; want its error", err)
		}
		if err := s.ForEachTree(cancelled(), func(cid.Cid) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Fatalf("ForEachTree, cancelled: %v", err)
		}
	}},
	{name: "DeleteTreeDropsItsLeavesAndTheirReferences", run: func(t *testing.T, s store.BlockStore) {
		shared, own, zeros := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2), newBlock(store.CodecBlock, 3)
		// Tree 1 names zeros at many positions (as a file of zeros does),
		// and shares a block with tree 2.
		for i := range uint64(2500) {
			mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: i, Block: zeros.CID}, zeros)
		}
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: 2500, Block: shared.CID}, shared)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: 2501, Block: own.CID}, own)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(2), Index: 0, Block: shared.CID}, shared)
		n, err := s.DeleteTree(t.Context(), tree(1))
		if err != nil || n != 2502 {
			t.Fatalf("DeleteTree = %d, %v; want 2502 leaves", n, err)
		}
		checkNoLeaf(t, s, tree(1), 0)
		checkNoLeaf(t, s, tree(1), 2500)
		checkAbsent(t, s, zeros.CID)
		checkAbsent(t, s, own.CID)
		checkLeaf(t, s, store.Leaf{Tree: tree(2), Index: 0, Block: shared.CID}, shared)
		checkUsage(t, s, usageOf(0, shared))
		if got, want := listedTrees(t, s), sortedStrings(tree(2)); !slices.Equal(got, want) {
			t.Fatalf("trees after DeleteTree: %v; want %v", got, want)
		}
		if n, err := s.DeleteTree(t.Context(), tree(1)); err != nil || n != 0 {
			t.Fatalf("DeleteTree of a tree not held = %d, %v; want 0, nil", n, err)
		}
		if _, err := s.DeleteTree(cancelled(), tree(2)); !errors.Is(err, context.Canceled) {
			t.Fatalf("DeleteTree, cancelled: %v", err)
		}
		checkLeaf(t, s, store.Leaf{Tree: tree(2), Index: 0, Block: shared.CID}, shared)
	}},
}
