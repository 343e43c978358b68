package store

import (
	"context"
	"errors"

	"github.com/ipfs/go-cid"
)

// Reclaimer makes room in a full store by its own policy (a node collects
// cached datasets): told how many bytes a write needs, it reports whether
// the write may be tried again.
type Reclaimer interface {
	Reclaim(ctx context.Context, need uint64) bool
}

// Reclaiming returns st with its writes made to fit: a write that finds
// the quota exceeded has r make room for it, and is tried once more if r
// says so. Whoever writes (the block exchange storing what it fetched, a
// reader keeping a decoded block, an upload) need not know that a full
// store is emptied, nor by what rule.
//
// A BatchStore stays one: its batches are made to fit the same way, and
// its reads into the caller's buffers are passed through.
func Reclaiming(st BlockStore, r Reclaimer) BlockStore {
	rs := reclaiming{BlockStore: st, r: r}
	if b, ok := st.(BatchStore); ok {
		return reclaimingBatch{reclaiming: rs, b: b}
	}
	return rs
}

type reclaiming struct {
	BlockStore
	r Reclaimer
}

func (s reclaiming) Put(ctx context.Context, b Block) error {
	return s.fit(ctx, len(b.Data), func() error { return s.BlockStore.Put(ctx, b) })
}

func (s reclaiming) PutLeafBlock(ctx context.Context, leaf Leaf, b Block) error {
	return s.fit(ctx, len(b.Data)+len(leaf.Proof), func() error { return s.BlockStore.PutLeafBlock(ctx, leaf, b) })
}

// PutLeaf: a leaf's proof counts against the quota too.
func (s reclaiming) PutLeaf(ctx context.Context, leaf Leaf) error {
	return s.fit(ctx, len(leaf.Proof), func() error { return s.BlockStore.PutLeaf(ctx, leaf) })
}

// quotaNeed is what writing blocks and leaves takes of the quota: the
// blocks' bytes and the leaves' proofs, as for PutLeafBlock.
func quotaNeed(leaves []Leaf, blocks []Block) int {
	n := 0
	for _, b := range blocks {
		n += len(b.Data)
	}
	for _, l := range leaves {
		n += len(l.Proof)
	}
	return n
}

func (s reclaiming) fit(ctx context.Context, need int, put func() error) error {
	err := put()
	if errors.Is(err, ErrQuotaExceeded) && s.r.Reclaim(ctx, uint64(need)) {
		err = put()
	}
	return err
}

type reclaimingBatch struct {
	reclaiming
	b BatchStore
}

func (s reclaimingBatch) PutLeafBlocks(ctx context.Context, leaves []Leaf, blocks []Block) error {
	return s.fit(ctx, quotaNeed(leaves, blocks), func() error { return s.b.PutLeafBlocks(ctx, leaves, blocks) })
}

func (s reclaimingBatch) MoveLeaves(ctx context.Context, from cid.Cid, leaves []Leaf) error {
	return s.fit(ctx, quotaNeed(leaves, nil), func() error { return s.b.MoveLeaves(ctx, from, leaves) })
}

func (s reclaimingBatch) ReadLeaf(ctx context.Context, tree cid.Cid, index uint64, p []byte, off int64) (int, error) {
	return s.b.ReadLeaf(ctx, tree, index, p, off)
}
