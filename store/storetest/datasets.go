package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

func treeNamed(t *testing.T, s RetentionStore, tree cid.Cid) bool {
	t.Helper()
	named, err := s.TreeNamed(t.Context(), tree)
	if err != nil {
		t.Fatalf("TreeNamed %s: %v", tree, err)
	}
	return named
}

// noErr fails the test when the call named what failed.
func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

var datasetCases = []retentionCase{
	{name: "DatasetAndRecordTogether", run: func(t *testing.T, s RetentionStore) {
		m := newBlock(store.CodecManifest, 1)
		at := time.Date(2031, 2, 3, 4, 5, 6, 7e6, time.UTC)
		noErr(t, "PutDataset", s.PutDataset(t.Context(), m, store.Retention{LastAccess: at, Tree: tree(1)}))
		checkBlock(t, s, m)
		r := getRetention(t, s, m.CID)
		if r.Pinned || !r.LastAccess.Equal(at) || !r.Tree.Equals(tree(1)) {
			t.Fatalf("record after PutDataset: %+v; want cached, %v, tree %s", r, at, tree(1))
		}
		if !treeNamed(t, s, tree(1)) || treeNamed(t, s, tree(2)) {
			t.Fatal("TreeNamed: want the dataset's tree named, no other")
		}
		checkUsage(t, s, usageOf(0, m))
		noErr(t, "DeleteDataset", s.DeleteDataset(t.Context(), m.CID))
		checkAbsent(t, s, m.CID)
		if _, err := s.GetRetention(t.Context(), m.CID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetRetention after DeleteDataset: %v; want ErrNotFound", err)
		}
		if treeNamed(t, s, tree(1)) {
			t.Fatal("the tree is still named once its only dataset is deleted")
		}
		checkUsage(t, s, usageOf(0))
		noErr(t, "DeleteDataset", s.DeleteDataset(t.Context(), m.CID)) // neither held: not an error
	}},
	{name: "DatasetOverQuotaLeavesNothing", quota: func() uint64 { return blockSize / 2 }, run: func(t *testing.T, s RetentionStore) {
		m := newBlock(store.CodecManifest, 1)
		if err := s.PutDataset(t.Context(), m, store.Retention{Pinned: true, Tree: tree(1)}); !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("PutDataset over the quota: %v; want ErrQuotaExceeded", err)
		}
		checkAbsent(t, s, m.CID)
		if _, err := s.GetRetention(t.Context(), m.CID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("record after a failed PutDataset: %v; want ErrNotFound", err)
		}
		if treeNamed(t, s, tree(1)) {
			t.Fatal("a failed PutDataset named its tree")
		}
		if err := s.PutDataset(cancelled(), m, store.Retention{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("PutDataset, cancelled: %v", err)
		}
		if err := s.DeleteDataset(cancelled(), m.CID); !errors.Is(err, context.Canceled) {
			t.Fatalf("DeleteDataset, cancelled: %v", err)
		}
		if _, err := s.TreeNamed(cancelled(), tree(1)); !errors.Is(err, context.Canceled) {
			t.Fatalf("TreeNamed, cancelled: %v", err)
		}
	}},
	{name: "DatasetOfHeldManifestGetsItsRecord", quota: func() uint64 { return blockSize }, run: func(t *testing.T, s RetentionStore) {
		m := newBlock(store.CodecManifest, 1)
		mustPut(t, s, m)
		// The store is full, but the manifest is held already: no more
		// bytes, so the record is taken.
		noErr(t, "PutDataset", s.PutDataset(t.Context(), m, store.Retention{Pinned: true, Tree: tree(1)}))
		if r := getRetention(t, s, m.CID); !r.Pinned || !treeNamed(t, s, tree(1)) {
			t.Fatalf("record of a held manifest: %+v", r)
		}
		checkUsage(t, s, usageOf(blockSize, m))
	}},
	{name: "TreeNamedWhileAnyRecordNamesIt", run: func(t *testing.T, s RetentionStore) {
		m1, m2 := newBlock(store.CodecManifest, 1), newBlock(store.CodecManifest, 2)
		b := newBlock(store.CodecBlock, 3)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: 0, Block: b.CID}, b)
		noErr(t, "PutDataset", s.PutDataset(t.Context(), m1, store.Retention{Pinned: true, Tree: tree(1)}))
		noErr(t, "PutDataset", s.PutDataset(t.Context(), m2, store.Retention{Tree: tree(1)}))
		noErr(t, "DeleteDataset", s.DeleteDataset(t.Context(), m1.CID))
		if !treeNamed(t, s, tree(1)) {
			t.Fatal("the tree is not named while a second dataset names it")
		}
		// Deleting a dataset leaves the leaves to whoever reclaims trees.
		checkLeaf(t, s, store.Leaf{Tree: tree(1), Index: 0, Block: b.CID}, b)
		// A record that moves to another tree stops naming the old one.
		mustPutRetention(t, s, m2.CID, store.Retention{Tree: tree(2)})
		if treeNamed(t, s, tree(1)) || !treeNamed(t, s, tree(2)) {
			t.Fatal("after the record moved: want tree 2 named, tree 1 not")
		}
		mustPutRetention(t, s, m2.CID, store.Retention{Pinned: true, Tree: tree(2)})
		if r := listedRetention(t, s)[m2.CID.String()]; !r.Pinned || !r.Tree.Equals(tree(2)) {
			t.Fatalf("ForEachRetention: %+v; want pinned, tree 2", r)
		}
		if err := s.DeleteRetention(t.Context(), m2.CID); err != nil {
			t.Fatalf("DeleteRetention: %v", err)
		}
		if treeNamed(t, s, tree(2)) {
			t.Fatal("the tree is named after its record was deleted")
		}
		// A record without a tree (from before trees were recorded) names none.
		mustPutRetention(t, s, m1.CID, store.Retention{Pinned: true})
		if r := getRetention(t, s, m1.CID); r.Tree.Defined() || !r.Pinned {
			t.Fatalf("a record without a tree came back as %+v", r)
		}
	}},
}
