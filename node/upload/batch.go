package upload

import (
	"context"
	"fmt"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// An upload's writes go through the store's store.BatchStore when it has
// one (the node's repository does): a worker stores its blocks a batch at
// a time, one append and one index commit where a call per block cost a
// lock, an append and a commit of its own (BenchmarkKeepLeaf: 33 µs a
// block against 40), and the buffers blocks are read into, encoded into
// and read back into are reused, since a BatchStore keeps none of them.
// Fresh ones cost the upload a quarter of its CPU in clearing them, the
// page faults of new memory and the garbage collections they set off, 60
// of them per 256 MiB. A store without batches gets a call per block and a
// fresh buffer for every one, as it may keep the slices it is given.

// batchBytes is how much block data a worker gathers before storing it:
// large enough that the commit is a small part of its cost, small enough
// that every worker's batch fits in its cache. A variable for tests.
var batchBytes = 1 << 20

// leafBatch is how many leaves of the dataset's tree one write records.
const leafBatch = 1024

// writer is the store as an upload writes to it, and the buffers the
// upload reuses.
type writer struct {
	st    store.BlockStore
	batch store.BatchStore // nil: the store has none
	bs    uint64

	mu   sync.Mutex
	free [][]byte // buffers of bs bytes, the last released first
}

func newWriter(st store.BlockStore, bs uint64) *writer {
	b, _ := st.(store.BatchStore)
	return &writer{st: st, batch: b, bs: bs}
}

// buffer returns a buffer of a block's size, of undefined contents.
func (w *writer) buffer() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.free); n > 0 {
		b := w.free[n-1]
		w.free = w.free[:n-1]
		return b
	}
	return make([]byte, w.bs)
}

// release gives back buffers the upload is done with; the last one given
// back is the next one handed out, still warm in the cache. Into a store
// without batches, whose blocks may be the very buffers, it does nothing.
func (w *writer) release(bufs ...[]byte) {
	if w.batch == nil {
		return
	}
	w.mu.Lock()
	w.free = append(w.free, bufs...)
	w.mu.Unlock()
}

// readLeaf returns a buffer holding the block at index of tree, c; release
// it once done with it.
func (w *writer) readLeaf(ctx context.Context, tree cid.Cid, index uint64, c cid.Cid) ([]byte, error) {
	if w.batch == nil {
		b, err := w.st.Get(ctx, c)
		return b.Data, err
	}
	buf := w.buffer()
	n, err := w.batch.ReadLeaf(ctx, tree, index, buf, 0)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("%d bytes of a block of %d", n, len(buf))
	}
	if err != nil {
		w.release(buf)
		return nil, err
	}
	return buf, nil
}

// putLeaves records leaves, the dataset's, each in place of the staging
// leaf at its index where the store can move them (the staging tree then
// has none left of them to drop); the rest of the staging tree goes when
// the upload ends.
func (w *writer) putLeaves(ctx context.Context, staging cid.Cid, leaves []store.Leaf) error {
	if w.batch != nil {
		return w.batch.MoveLeaves(ctx, staging, leaves)
	}
	for _, l := range leaves {
		if err := w.st.PutLeaf(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

// staged is a worker's batch: blocks hashed and not yet stored, each as
// the leaf of the staging tree at its index in the dataset.
type staged struct {
	leaves []store.Leaf
	blocks []store.Block
}

// stage adds b, at index i of the dataset, to batch, and stores the batch
// once it holds batchBytes.
func (j *job) stage(ctx context.Context, batch *staged, i uint64, b store.Block) error {
	batch.leaves = append(batch.leaves, store.Leaf{Tree: j.staging, Index: i, Block: b.CID})
	batch.blocks = append(batch.blocks, b)
	if uint64(len(batch.blocks))*j.bs < uint64(batchBytes) {
		return nil
	}
	return j.flush(ctx, batch)
}

// flush stores the blocks of batch as leaves of the staging tree: a
// reference of this upload's own, whether or not a block was held before.
// Their buffers go back to the writer.
func (j *job) flush(ctx context.Context, batch *staged) error {
	if len(batch.blocks) == 0 {
		return nil
	}
	w := j.w
	if w.batch != nil {
		if err := w.batch.PutLeafBlocks(ctx, batch.leaves, batch.blocks); err != nil {
			return err
		}
	} else {
		for i, b := range batch.blocks {
			if err := w.st.PutLeafBlock(ctx, batch.leaves[i], b); err != nil {
				return err
			}
		}
	}
	for i, b := range batch.blocks {
		w.release(b.Data)
		batch.blocks[i] = store.Block{}
	}
	batch.leaves, batch.blocks = batch.leaves[:0], batch.blocks[:0]
	return nil
}
