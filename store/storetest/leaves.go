package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// checkLeaf asserts that s holds want and its block with the given bytes.
func checkLeaf(t *testing.T, s store.BlockStore, want store.Leaf, block store.Block) {
	t.Helper()
	ok, err := s.HasLeaf(t.Context(), want.Tree, want.Index)
	if err != nil || !ok {
		t.Fatalf("HasLeaf %s[%d] = %v, %v; want true, nil", want.Tree, want.Index, ok, err)
	}
	leaf, b, err := s.GetLeaf(t.Context(), want.Tree, want.Index)
	if err != nil {
		t.Fatalf("GetLeaf %s[%d]: %v", want.Tree, want.Index, err)
	}
	if !leaf.Tree.Equals(want.Tree) || leaf.Index != want.Index || !leaf.Block.Equals(want.Block) || !bytes.Equal(leaf.Proof, want.Proof) {
		t.Fatalf("GetLeaf %s[%d] = %+v; want %+v", want.Tree, want.Index, leaf, want)
	}
	if !b.CID.Equals(block.CID) || !bytes.Equal(b.Data, block.Data) {
		t.Fatalf("GetLeaf %s[%d] returned block %s, not the bytes of %s", want.Tree, want.Index, b.CID, block.CID)
	}
}

func checkNoLeaf(t *testing.T, s store.BlockStore, tree cid.Cid, index uint64) {
	t.Helper()
	ok, err := s.HasLeaf(t.Context(), tree, index)
	if err != nil || ok {
		t.Fatalf("HasLeaf %s[%d] = %v, %v; want false, nil", tree, index, ok, err)
	}
	if _, _, err := s.GetLeaf(t.Context(), tree, index); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetLeaf %s[%d]: %v; want ErrNotFound", tree, index, err)
	}
}

func deleteLeaf(t *testing.T, s store.BlockStore, tree cid.Cid, index uint64) {
	t.Helper()
	if err := s.DeleteLeaf(t.Context(), tree, index); err != nil {
		t.Fatalf("DeleteLeaf %s[%d]: %v", tree, index, err)
	}
}

var leafCases = []testCase{
	{name: "LeafRoundTrip", run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		leaves := []store.Leaf{
			{Tree: tree(1), Index: 0, Block: b.CID, Proof: []byte("proof of 0")},
			{Tree: tree(1), Index: 1<<40 + 7, Block: b.CID, Proof: bytes.Repeat([]byte{0xAB}, 1500)},
			{Tree: tree(2), Index: 0, Block: b.CID, Proof: []byte{}},
		}
		mustPutLeaf(t, s, leaves...)
		for _, l := range leaves {
			checkLeaf(t, s, l, b)
		}
		checkNoLeaf(t, s, tree(1), 1)
		checkNoLeaf(t, s, tree(3), 0)
		checkUsage(t, s, withProofs(usageOf(0, b), leaves...))
	}},
	{name: "ReadLeafCopiesPartOfTheBlock", run: func(t *testing.T, s store.BlockStore) {
		r, ok := s.(store.LeafReader)
		if !ok {
			t.Skip("the store has no ReadLeaf")
		}
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		mustPutLeaf(t, s, store.Leaf{Tree: tree(1), Index: 5, Block: b.CID, Proof: []byte("p")})
		bs := int(blockSize)
		for _, c := range []struct {
			off     int64
			len     int
			wantLen int
		}{
			{0, bs, bs},
			{1000, 3000, 3000},
			{int64(bs) - 100, 4096, 100}, // only as far as the block goes
			{int64(bs), 10, 0},
			{0, 0, 0},
		} {
			p := make([]byte, c.len)
			n, err := r.ReadLeaf(t.Context(), tree(1), 5, p, c.off)
			if err != nil || n != c.wantLen {
				t.Fatalf("ReadLeaf(%d bytes at %d) = %d, %v; want %d, nil", c.len, c.off, n, err, c.wantLen)
			}
			if !bytes.Equal(p[:n], b.Data[c.off:c.off+int64(n)]) {
				t.Fatalf("ReadLeaf(%d bytes at %d): not the block's bytes", c.len, c.off)
			}
		}
		for _, off := range []int64{-1, int64(bs) + 1} {
			if _, err := r.ReadLeaf(t.Context(), tree(1), 5, make([]byte, 10), off); err == nil {
				t.Fatalf("ReadLeaf at %d: no error", off)
			}
		}
		if _, err := r.ReadLeaf(t.Context(), tree(1), 6, make([]byte, 10), 0); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ReadLeaf of a position not held: %v; want ErrNotFound", err)
		}
		if _, err := r.ReadLeaf(cancelled(), tree(1), 5, make([]byte, 10), 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("ReadLeaf with a cancelled context: %v; want context.Canceled", err)
		}
	}},
	{name: "LoadLeafReadsIntoTheBuffer", run: func(t *testing.T, s store.BlockStore) {
		l, ok := s.(store.LeafLoader)
		if !ok {
			t.Skip("the store has no LoadLeaf")
		}
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		want := store.Leaf{Tree: tree(1), Index: 5, Block: b.CID, Proof: []byte("proof of 5")}
		mustPutLeaf(t, s, want)
		for _, size := range []int{len(b.Data), len(b.Data) + 100, len(b.Data) - 1, 0} {
			buf := bytes.Repeat([]byte{0xEE}, size)
			leaf, got, err := l.LoadLeaf(t.Context(), tree(1), 5, buf)
			if err != nil {
				t.Fatalf("LoadLeaf into %d bytes: %v", size, err)
			}
			if !got.CID.Equals(b.CID) || !bytes.Equal(got.Data, b.Data) {
				t.Fatalf("LoadLeaf into %d bytes: not the block", size)
			}
			if !leaf.Block.Equals(b.CID) || !bytes.Equal(leaf.Proof, want.Proof) || leaf.Index != 5 || !leaf.Tree.Equals(tree(1)) {
				t.Fatalf("LoadLeaf into %d bytes: leaf %+v, want %+v", size, leaf, want)
			}
			if inBuf := size >= len(b.Data) && &got.Data[0] == &buf[0]; inBuf != (size >= len(b.Data)) {
				t.Fatalf("LoadLeaf into %d bytes: data in the caller's buffer is %v", size, inBuf)
			}
		}
		if _, _, err := l.LoadLeaf(t.Context(), tree(1), 6, make([]byte, len(b.Data))); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("LoadLeaf of a position not held: %v; want ErrNotFound", err)
		}
		if _, _, err := l.LoadLeaf(cancelled(), tree(1), 5, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("LoadLeaf with a cancelled context: %v; want context.Canceled", err)
		}
	}},
	{name: "LeafProofIsUpdated", run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		l := store.Leaf{Tree: tree(1), Index: 3, Block: b.CID, Proof: []byte("old")}
		mustPutLeaf(t, s, l)
		l.Proof = []byte("new proof")
		mustPutLeaf(t, s, l)
		checkLeaf(t, s, l, b)
		// Still one reference: one DeleteLeaf frees the block.
		deleteLeaf(t, s, l.Tree, l.Index)
		checkAbsent(t, s, b.CID)
	}},
	{name: "LeafOnMissingBlock", run: func(t *testing.T, s store.BlockStore) {
		missing := newBlock(store.CodecBlock, 1)
		err := s.PutLeaf(t.Context(), store.Leaf{Tree: tree(1), Index: 0, Block: missing.CID, Proof: []byte("p")})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("PutLeaf naming a block not held: %v; want ErrNotFound", err)
		}
		checkNoLeaf(t, s, tree(1), 0)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "SameLeafTwiceIsOneReference", run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		l := store.Leaf{Tree: tree(1), Index: 0, Block: b.CID, Proof: []byte("p")}
		mustPutLeaf(t, s, l, l)
		deleteLeaf(t, s, l.Tree, l.Index)
		checkNoLeaf(t, s, l.Tree, l.Index)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "RefcountAcrossTrees", run: func(t *testing.T, s store.BlockStore) {
		shared, other := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, shared, other)
		l1 := store.Leaf{Tree: tree(1), Index: 5, Block: shared.CID, Proof: []byte("p1")}
		l2 := store.Leaf{Tree: tree(2), Index: 9, Block: shared.CID, Proof: []byte("p2")}
		mustPutLeaf(t, s, l1, l2)

		// Referenced: Delete succeeds and keeps it.
		if err := s.Delete(t.Context(), shared.CID); err != nil {
			t.Fatalf("Delete of a referenced block: %v", err)
		}
		checkBlock(t, s, shared)
		checkLeaf(t, s, l1, shared)

		deleteLeaf(t, s, l1.Tree, l1.Index)
		checkNoLeaf(t, s, l1.Tree, l1.Index)
		checkLeaf(t, s, l2, shared)
		checkUsage(t, s, withProofs(usageOf(0, shared, other), l2))

		deleteLeaf(t, s, l2.Tree, l2.Index)
		checkNoLeaf(t, s, l2.Tree, l2.Index)
		checkAbsent(t, s, shared.CID)
		checkBlock(t, s, other)
		checkUsage(t, s, usageOf(0, other))

		// Deleting a leaf that is gone is not an error and changes nothing.
		deleteLeaf(t, s, l2.Tree, l2.Index)
		checkUsage(t, s, usageOf(0, other))
	}},
	{name: "RefcountWithinTree", run: func(t *testing.T, s store.BlockStore) {
		// Runs of identical data (zeros) give one block at many positions.
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		for i := range uint64(3) {
			mustPutLeaf(t, s, store.Leaf{Tree: tree(1), Index: i, Block: b.CID})
		}
		for i := range uint64(2) {
			deleteLeaf(t, s, tree(1), i)
			checkBlock(t, s, b)
		}
		deleteLeaf(t, s, tree(1), 2)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "LeafReplacedMovesReference", run: func(t *testing.T, s store.BlockStore) {
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPut(t, s, a, b)
		mustPutLeaf(t, s, store.Leaf{Tree: tree(1), Index: 0, Block: a.CID, Proof: []byte("a")})
		repl := store.Leaf{Tree: tree(1), Index: 0, Block: b.CID, Proof: []byte("b")}
		mustPutLeaf(t, s, repl)
		checkLeaf(t, s, repl, b)
		checkAbsent(t, s, a.CID) // its only reference went away
		checkUsage(t, s, withProofs(usageOf(0, b), repl))
		deleteLeaf(t, s, repl.Tree, repl.Index)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "PutLeafBlock", run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		l := store.Leaf{Tree: tree(1), Index: 7, Block: b.CID, Proof: []byte("p")}
		mustPutLeafBlock(t, s, l, b)
		checkLeaf(t, s, l, b)
		checkBlock(t, s, b)
		checkUsage(t, s, withProofs(usageOf(0, b), l))
		// Again, and at another position: one block, two references.
		mustPutLeafBlock(t, s, l, b)
		l2 := store.Leaf{Tree: tree(2), Index: 0, Block: b.CID, Proof: []byte("p2")}
		mustPutLeafBlock(t, s, l2, b)
		checkUsage(t, s, withProofs(usageOf(0, b), l, l2))
		deleteLeaf(t, s, l.Tree, l.Index)
		checkLeaf(t, s, l2, b)
		deleteLeaf(t, s, l2.Tree, l2.Index)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "PutLeafBlockOfHeldBlock", run: func(t *testing.T, s store.BlockStore) {
		b := newBlock(store.CodecBlock, 1)
		mustPut(t, s, b)
		l := store.Leaf{Tree: tree(1), Index: 0, Block: b.CID, Proof: []byte("p")}
		mustPutLeafBlock(t, s, l, b)
		checkLeaf(t, s, l, b)
		checkUsage(t, s, withProofs(usageOf(0, b), l))
		// The leaf is its only reference, as if recorded by PutLeaf.
		deleteLeaf(t, s, l.Tree, l.Index)
		checkAbsent(t, s, b.CID)
	}},
	{name: "PutLeafBlockReplacesLeaf", run: func(t *testing.T, s store.BlockStore) {
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: 0, Block: a.CID, Proof: []byte("a")}, a)
		repl := store.Leaf{Tree: tree(1), Index: 0, Block: b.CID, Proof: []byte("b")}
		mustPutLeafBlock(t, s, repl, b)
		checkLeaf(t, s, repl, b)
		checkAbsent(t, s, a.CID) // its only reference went away
		checkUsage(t, s, withProofs(usageOf(0, b), repl))
		// A new proof for the same block is still one reference.
		repl.Proof = []byte("b again")
		mustPutLeafBlock(t, s, repl, b)
		checkLeaf(t, s, repl, b)
		deleteLeaf(t, s, repl.Tree, repl.Index)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "PutLeafBlockRefusesMismatch", run: func(t *testing.T, s store.BlockStore) {
		a, b := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2)
		// The leaf names another block than the one given.
		err := s.PutLeafBlock(t.Context(), store.Leaf{Tree: tree(1), Index: 0, Block: a.CID}, b)
		if !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("PutLeafBlock of a block the leaf does not name: %v; want ErrInvalidBlock", err)
		}
		// The bytes do not hash to the CID the leaf names.
		bad := store.Block{CID: a.CID, Data: b.Data}
		err = s.PutLeafBlock(t.Context(), store.Leaf{Tree: tree(1), Index: 0, Block: a.CID}, bad)
		if !errors.Is(err, store.ErrInvalidBlock) {
			t.Fatalf("PutLeafBlock of bytes that are not the block: %v; want ErrInvalidBlock", err)
		}
		checkNoLeaf(t, s, tree(1), 0)
		checkAbsent(t, s, a.CID)
		checkAbsent(t, s, b.CID)
		checkUsage(t, s, usageOf(0))
	}},
	{name: "PutLeafBlockOverQuota", quota: func() uint64 { return 2 * blockSize }, run: func(t *testing.T, s store.BlockStore) {
		a, b, c := newBlock(store.CodecBlock, 1), newBlock(store.CodecBlock, 2), newBlock(store.CodecBlock, 3)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: 0, Block: a.CID}, a)
		mustPutLeafBlock(t, s, store.Leaf{Tree: tree(1), Index: 1, Block: b.CID}, b)
		err := s.PutLeafBlock(t.Context(), store.Leaf{Tree: tree(1), Index: 2, Block: c.CID}, c)
		if !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("PutLeafBlock over quota: %v; want ErrQuotaExceeded", err)
		}
		checkNoLeaf(t, s, tree(1), 2)
		checkAbsent(t, s, c.CID)
		checkUsage(t, s, usageOf(2*blockSize, a, b))
	}},
}
