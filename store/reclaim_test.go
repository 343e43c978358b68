package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

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
