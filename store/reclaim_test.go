package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// dropOne is a policy that makes room by deleting one block it was given,
// and records what it was asked for.
type dropOne struct {
	st    store.BlockStore
	spare store.Block
	asked []uint64
	room  bool
}

func (d *dropOne) Reclaim(ctx context.Context, need uint64) bool {
	d.asked = append(d.asked, need)
	if !d.room {
		return false
	}
	return d.st.Delete(ctx, d.spare.CID) == nil
}

func TestReclaimingMakesRoomForAWrite(t *testing.T) {
	ctx := t.Context()
	full := store.NewMemory(2 * 1000)
	old := store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{1}, 1000))
	kept := store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{2}, 1000))
	for _, b := range []store.Block{old, kept} {
		if err := full.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	policy := &dropOne{st: full, spare: old, room: true}
	st := store.Reclaiming(full, policy)
	fresh := store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{3}, 1000))
	if err := st.Put(ctx, fresh); err != nil {
		t.Fatalf("Put into a full store whose policy makes room: %v", err)
	}
	if len(policy.asked) != 1 || policy.asked[0] != 1000 {
		t.Errorf("policy asked for %v bytes; want one ask for 1000", policy.asked)
	}
	for _, c := range []store.Block{kept, fresh} {
		if has, err := full.Has(ctx, c.CID); err != nil || !has {
			t.Errorf("block %s held = %v, %v; want held", c.CID, has, err)
		}
	}
}

func TestReclaimingWithNoRoomFailsAsTheStoreDoes(t *testing.T) {
	ctx := t.Context()
	full := store.NewMemory(1000)
	if err := full.Put(ctx, store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{1}, 1000))); err != nil {
		t.Fatal(err)
	}
	policy := &dropOne{st: full}
	st := store.Reclaiming(full, policy)
	leaf := store.Leaf{Tree: store.NewBlock(store.CodecRoot, []byte("t")).CID, Index: 0, Proof: bytes.Repeat([]byte{9}, 40)}
	b := store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{2}, 500))
	leaf.Block = b.CID
	if err := st.PutLeafBlock(ctx, leaf, b); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("PutLeafBlock with nothing to reclaim = %v; want ErrQuotaExceeded", err)
	}
	if len(policy.asked) != 1 || policy.asked[0] != 540 {
		t.Errorf("policy asked for %v bytes; want one ask for the block and its proof, 540", policy.asked)
	}
}

// batched is a BatchStore over a memory store, one call per block: enough
// to see what Reclaiming passes on.
type batched struct {
	*store.Memory
	leafReads int
}

func (b *batched) PutLeafBlocks(ctx context.Context, leaves []store.Leaf, blocks []store.Block) error {
	for i := range blocks {
		if err := b.PutLeafBlock(ctx, leaves[i], blocks[i]); err != nil {
			return err
		}
	}
	return nil
}

func (b *batched) MoveLeaves(ctx context.Context, from cid.Cid, leaves []store.Leaf) error {
	for _, l := range leaves {
		if err := b.PutLeaf(ctx, l); err != nil {
			return err
		}
		if err := b.DeleteLeaf(ctx, from, l.Index); err != nil {
			return err
		}
	}
	return nil
}

func (b *batched) ReadLeaf(ctx context.Context, tree cid.Cid, index uint64, p []byte, off int64) (int, error) {
	b.leafReads++
	return b.Memory.ReadLeaf(ctx, tree, index, p, off)
}

// A BatchStore made reclaiming is still one, and a batch that finds the
// quota exceeded has the policy make room for all of it.
func TestReclaimingKeepsBatches(t *testing.T) {
	ctx := t.Context()
	full := &batched{Memory: store.NewMemory(2 * 1000)}
	old := store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{1}, 1000))
	if err := full.Put(ctx, old); err != nil {
		t.Fatal(err)
	}
	policy := &dropOne{st: full, spare: old, room: true}
	st, ok := store.Reclaiming(full, policy).(store.BatchStore)
	if !ok {
		t.Fatal("Reclaiming of a BatchStore is not one")
	}
	tree := store.NewBlock(store.CodecRoot, []byte("t")).CID
	var leaves []store.Leaf
	var blocks []store.Block
	for i := range 2 {
		b := store.NewBlock(store.CodecBlock, bytes.Repeat([]byte{byte(2 + i)}, 500))
		blocks = append(blocks, b)
		leaves = append(leaves, store.Leaf{Tree: tree, Index: uint64(i), Block: b.CID, Proof: bytes.Repeat([]byte{9}, 40)})
	}
	if err := st.PutLeafBlocks(ctx, leaves, blocks); err != nil {
		t.Fatalf("PutLeafBlocks into a full store whose policy makes room: %v", err)
	}
	if len(policy.asked) != 1 || policy.asked[0] != 1080 {
		t.Errorf("policy asked for %v bytes; want one ask for the blocks and their proofs, 1080", policy.asked)
	}
	if n, err := st.ReadLeaf(ctx, tree, 1, make([]byte, 500), 0); err != nil || n != 500 || full.leafReads != 1 {
		t.Errorf("ReadLeaf = %d, %v after %d reads of the store's; want 500 bytes read by the store", n, err, full.leafReads)
	}
	if _, ok := store.Reclaiming(store.NewMemory(0), policy).(store.BatchStore); ok {
		t.Error("Reclaiming of a store without batches has them")
	}
}
