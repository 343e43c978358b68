package storetest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// listed collects what ForEach reports for codec, failing on duplicates.
func listed(t *testing.T, s store.BlockStore, codec uint64) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	err := s.ForEach(t.Context(), codec, func(c cid.Cid) error {
		if got[c.String()] {
			t.Errorf("ForEach(%s) reported %s twice", store.CodecName(codec), c)
		}
		got[c.String()] = true
		return nil
	})
	if err != nil {
		t.Fatalf("ForEach(%s): %v", store.CodecName(codec), err)
	}
	return got
}

func cidSet(blocks ...store.Block) map[string]bool {
	m := map[string]bool{}
	for _, b := range blocks {
		m[b.CID.String()] = true
	}
	return m
}

var listCases = []testCase{
	{name: "ForEachByCodec", run: func(t *testing.T, s store.BlockStore) {
		var data, manifests []store.Block
		for i := range uint64(20) {
			data = append(data, newBlock(store.CodecBlock, i))
		}
		for i := range uint64(3) {
			manifests = append(manifests, store.NewBlock(store.CodecManifest, []byte{byte(i)}))
		}
		root := newBlock(store.CodecRoot, 100)
		mustPut(t, s, data...)
		mustPut(t, s, manifests...)
		mustPut(t, s, root)
		if err := s.Delete(t.Context(), data[0].CID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		data = data[1:]

		for _, want := range []struct {
			codec  uint64
			blocks []store.Block
		}{
			{store.CodecBlock, data},
			{store.CodecManifest, manifests},
			{store.CodecRoot, []store.Block{root}},
			{cid.Raw, nil},
		} {
			got := listed(t, s, want.codec)
			if w := cidSet(want.blocks...); !maps.Equal(got, w) {
				t.Errorf("ForEach(%s) = %v; want %v", store.CodecName(want.codec), slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(w)))
			}
		}
	}},
	{name: "ForEachStopsAtFirstError", run: func(t *testing.T, s store.BlockStore) {
		for i := range uint64(5) {
			mustPut(t, s, newBlock(store.CodecBlock, i))
		}
		stop := errors.New("stop")
		calls := 0
		err := s.ForEach(t.Context(), store.CodecBlock, func(cid.Cid) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("ForEach = %v after %d calls; want fn's error after 1", err, calls)
		}
	}},
	{name: "ForEachMayCallBack", run: func(t *testing.T, s store.BlockStore) {
		// Garbage collection lists blocks and deletes them as it goes.
		for i := range uint64(10) {
			mustPut(t, s, newBlock(store.CodecBlock, i))
		}
		err := s.ForEach(t.Context(), store.CodecBlock, func(c cid.Cid) error {
			if _, err := s.Get(t.Context(), c); err != nil {
				return err
			}
			return s.Delete(t.Context(), c)
		})
		if err != nil {
			t.Fatalf("ForEach deleting as it goes: %v", err)
		}
		checkUsage(t, s, usageOf(0))
	}},
}

var lifecycleCases = []testCase{
	{name: "CancelledContext", run: func(t *testing.T, s store.BlockStore) {
		held, fresh := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, held)
		leaf := store.Leaf{Tree: tree(1), Index: 0, Block: held.CID}
		mustPutLeaf(t, s, leaf)
		ctx := cancelled()
		calls := map[string]error{}
		_, calls["Get"] = s.Get(ctx, held.CID)
		_, calls["Has"] = s.Has(ctx, held.CID)
		calls["Put"] = s.Put(ctx, fresh)
		calls["Delete"] = s.Delete(ctx, held.CID)
		_, _, calls["GetLeaf"] = s.GetLeaf(ctx, leaf.Tree, 0)
		_, calls["HasLeaf"] = s.HasLeaf(ctx, leaf.Tree, 0)
		calls["PutLeaf"] = s.PutLeaf(ctx, store.Leaf{Tree: tree(2), Index: 0, Block: held.CID})
		calls["DeleteLeaf"] = s.DeleteLeaf(ctx, leaf.Tree, 0)
		calls["ForEach"] = s.ForEach(ctx, store.CodecBlock, func(cid.Cid) error { return nil })
		_, calls["Usage"] = s.Usage(ctx)
		for name, err := range calls {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v; want context.Canceled", name, err)
			}
		}
		// And none of them changed anything.
		checkAbsent(t, s, fresh.CID)
		checkLeaf(t, s, leaf, held)
		checkNoLeaf(t, s, tree(2), 0)
		checkUsage(t, s, usageOf(0, held))
	}},
	{name: "ForEachCancelledMidway", run: func(t *testing.T, s store.BlockStore) {
		for i := range uint64(10) {
			mustPut(t, s, newBlock(store.CodecBlock, i))
		}
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		err := s.ForEach(ctx, store.CodecBlock, func(cid.Cid) error {
			calls++
			cancel()
			return nil
		})
		if !errors.Is(err, context.Canceled) || calls != 1 {
			t.Fatalf("ForEach = %v after %d calls; want context.Canceled after 1", err, calls)
		}
	}},
	{name: "ClosedStore", run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		mustPutLeaf(t, s, store.Leaf{Tree: tree(1), Index: 0, Block: b.CID})
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v; want nil", err)
		}
		ctx := t.Context()
		calls := map[string]error{}
		_, calls["Get"] = s.Get(ctx, b.CID)
		_, calls["Has"] = s.Has(ctx, b.CID)
		calls["Put"] = s.Put(ctx, newBlock(store.CodecBlock, 2))
		calls["Delete"] = s.Delete(ctx, b.CID)
		_, _, calls["GetLeaf"] = s.GetLeaf(ctx, tree(1), 0)
		_, calls["HasLeaf"] = s.HasLeaf(ctx, tree(1), 0)
		calls["PutLeaf"] = s.PutLeaf(ctx, store.Leaf{Tree: tree(2), Index: 0, Block: b.CID})
		calls["DeleteLeaf"] = s.DeleteLeaf(ctx, tree(1), 0)
		calls["ForEach"] = s.ForEach(ctx, store.CodecBlock, func(cid.Cid) error { return nil })
		_, calls["Usage"] = s.Usage(ctx)
		for name, err := range calls {
			if !errors.Is(err, store.ErrClosed) {
				t.Errorf("%s after Close: %v; want ErrClosed", name, err)
			}
		}
	}},
}
