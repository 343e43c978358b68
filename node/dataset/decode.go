package dataset

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/merkle"
)

// recovery is a dataset reader's erasure-decoding state: the decodes under
// way (one per codeword), the blocks rebuilt but not yet stored, and what is
// known of the dataset's tree to prove them.
type recovery struct {
	mu       sync.Mutex
	decoding map[uint64]*decodeCall   // by codeword
	pending  map[uint64]store.Block   // rebuilt, waiting for a proof to be stored
	tree     *merkle.Sparse           // nodes learnt while blocks are pending
	storing  bool                     // a storePending run is under way
	learning bool                     // learnMissing is fetching
	recent   [recentLeaves]store.Leaf // leaves read lately: a lost block's neighbours
	next     int
	bg       sync.WaitGroup

	decodes, recovered atomic.Uint64
}

// recentLeaves is how many recently read leaves are kept for their
// proofs: a block found lost is usually next to blocks just read.
const recentLeaves = 64

// maxPending bounds the rebuilt blocks held in memory waiting for a proof;
// past it the oldest are dropped (they stay decodable).
const maxPending = 512

type decodeCall struct {
	done   chan struct{}
	blocks map[uint64][]byte // every data block of the codeword
	err    error
}

// decode returns block i rebuilt from its codeword. Concurrent reads of
// blocks of one codeword share a single decode, at the priority of the
// read that started it.
func (d *Reader) decode(ctx context.Context, i uint64, cause error, prio store.Priority) ([]byte, error) {
	r := &d.rec
	col := d.layout.Column(i)
	r.mu.Lock()
	// A decode of this codeword may have finished while our fetch failed:
	// its block is pending, or stored by now.
	if b, ok := r.pending[i]; ok {
		r.mu.Unlock()
		return b.Data, nil
	}
	if data, ok := d.cache.get(i); ok {
		r.mu.Unlock()
		return data, nil
	}
	if held, err := d.cfg.Store.HasLeaf(ctx, d.Manifest.TreeCID, i); err == nil && held {
		r.mu.Unlock()
		_, data, err := d.fetch(ctx, i, prio)
		return data, err
	}
	if r.decoding == nil {
		r.decoding = map[uint64]*decodeCall{}
	}
	call := r.decoding[col]
	if call == nil {
		call = &decodeCall{done: make(chan struct{})}
		r.decoding[col] = call
		go func() {
			// Detached from this reader's ctx so that one reader giving up
			// does not fail the others waiting on the same codeword; each
			// shard fetch is bounded by BlockTimeout.
			call.blocks, call.err = d.decodeColumn(context.WithoutCancel(ctx), col, i, cause, prio)
			r.mu.Lock()
			delete(r.decoding, col)
			r.mu.Unlock()
			close(call.done)
		}()
	}
	r.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("block %d: %w", i, ctx.Err())
	}
	if call.err != nil {
		return nil, fmt.Errorf("block %d: %w", i, call.err)
	}
	return call.blocks[i], nil
}

// decodeColumn rebuilds the data blocks of codeword col from K of its
// blocks. It asks for no more than it needs: the codeword's other data
// blocks first (a sequential reader wants them next anyway), then parity,
// never the block just found lost, and one more only for each that
// fails. Only this codeword is decoded, on demand.
func (d *Reader) decodeColumn(ctx context.Context, col, lost uint64, cause error, prio store.Priority) (map[uint64][]byte, error) {
	l := d.layout
	idx := l.Indices(col)
	shards := make([][]byte, len(idx))
	leaves := make([]store.Leaf, len(idx))
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type got struct {
		row  int
		leaf store.Leaf
		data []byte
	}
	have := 0
	failed := make([]bool, len(idx))
	var todo []int // rows to fetch, in order of preference
	for row, j := range idx {
		switch {
		case l.IsPadding(j):
			shards[row] = make([]byte, d.Manifest.BlockSize)
			have++
		case j == lost:
			failed[row] = true
		default:
			todo = append(todo, row)
		}
	}
	results := make(chan got, len(idx))
	inflight := 0
	launch := func() {
		row := todo[0]
		todo = todo[1:]
		inflight++
		go func() {
			leaf, data, err := d.fetch(fctx, idx[row], prio)
			if err != nil {
				data = nil
			}
			results <- got{row, leaf, data}
		}()
	}
	for have+inflight < l.K && len(todo) > 0 {
		launch()
	}
	for have < l.K && inflight > 0 {
		r := <-results
		inflight--
		if r.data != nil {
			shards[r.row], leaves[r.row] = r.data, r.leaf
			have++
			continue
		}
		failed[r.row] = true
		if len(todo) > 0 {
			launch()
		}
	}
	cancel()
	if have < l.K {
		return nil, fmt.Errorf("%w; codeword %d has %d of the %d blocks needed to decode it", cause, col, have, l.K)
	}
	var need []int
	for row := 0; row < l.K; row++ {
		if shards[row] == nil {
			need = append(need, row)
		}
	}
	if err := d.coder.Reconstruct(shards, need); err != nil {
		return nil, fmt.Errorf("decode codeword %d: %w", col, err)
	}
	d.rec.decodes.Add(1)
	// Rows that simply had not arrived when K others had are rebuilt too;
	// any not held here is kept (it is correct, and saves fetching it).
	rebuilt := make(map[uint64]store.Block, len(need))
	for _, row := range need {
		j := idx[row]
		if l.IsPadding(j) {
			continue
		}
		if !failed[row] && j != lost {
			if held, err := d.cfg.Store.HasLeaf(ctx, d.Manifest.TreeCID, j); err != nil || held {
				continue
			}
		}
		// Hashed here, once, outside the lock: its digest goes into the
		// tree now and its CID into the store later.
		rebuilt[j] = store.NewBlock(store.CodecBlock, shards[row])
	}
	out := make(map[uint64][]byte, l.K)
	for row := 0; row < l.K; row++ {
		if j := idx[row]; !l.IsPadding(j) {
			out[j] = shards[row]
			d.cache.put(j, shards[row])
		}
	}
	d.rec.recovered.Add(uint64(len(rebuilt)))
	d.cfg.Counters.Decodes.Add(1)
	d.cfg.Counters.Recovered.Add(uint64(len(rebuilt)))
	d.keep(idx, leaves, rebuilt)
	return out, nil
}

// keep records what a decode taught about the tree and queues the rebuilt
// blocks to be stored once they can be proved.
func (d *Reader) keep(idx []uint64, leaves []store.Leaf, rebuilt map[uint64]store.Block) {
	r := &d.rec
	r.mu.Lock()
	if r.tree == nil {
		sp, err := merkle.NewSparse(int(d.Manifest.Blocks()))
		if err != nil {
			r.mu.Unlock()
			return
		}
		r.tree = sp
		// Padding leaves are never stored or read, but their digest is
		// fixed: the blocks next to them are proved with it.
		for j := d.layout.N; j < d.layout.Rounded(); j++ {
			sp.AddLeaf(int(j), erasure.PaddingDigest)
		}
	}
	for _, leaf := range r.recent {
		if leaf.Proof != nil {
			learnProof(r.tree, leaf)
		}
	}
	for row, j := range idx {
		switch {
		case d.layout.IsPadding(j):
			r.tree.AddLeaf(int(j), erasure.PaddingDigest)
		case leaves[row].Proof != nil:
			learnProof(r.tree, leaves[row])
		}
	}
	if r.pending == nil {
		r.pending = map[uint64]store.Block{}
	}
	for j, b := range rebuilt {
		digest, err := store.Digest(b.CID)
		if err != nil {
			continue
		}
		r.tree.AddLeaf(int(j), digest)
		if len(r.pending) >= maxPending {
			for old := range r.pending {
				delete(r.pending, old)
				break
			}
		}
		r.pending[j] = b
	}
	r.mu.Unlock()
	d.storePending()
}

// learnLeaf adds the proof of a block just read to what is known of the
// tree, while rebuilt blocks wait for proofs: neighbours read later are
// what completes the tree around a run of lost blocks.
func (d *Reader) learnLeaf(leaf store.Leaf) {
	if !d.Manifest.Protected || leaf.Proof == nil {
		return
	}
	r := &d.rec
	r.mu.Lock()
	waiting := len(r.pending) > 0
	if waiting {
		learnProof(r.tree, leaf)
	} else {
		r.recent[r.next] = leaf
		r.next = (r.next + 1) % recentLeaves
	}
	r.mu.Unlock()
	if waiting {
		d.storePending()
	}
}

// learnProof adds a leaf and its proof; the leaf's digest is in its block
// CID, so the block need not be hashed again.
func learnProof(sp *merkle.Sparse, leaf store.Leaf) {
	digest, err := store.Digest(leaf.Block)
	if err != nil {
		return
	}
	if p, err := merkle.UnmarshalProof(leaf.Proof); err == nil {
		_ = sp.AddProof(digest, p)
	}
}

// storePending stores every pending rebuilt block that can now be proved,
// with its proof (checked against the tree root first), so the node serves
// it to peers like any other. Nothing unproved is ever stored. One run at
// a time, in the background.
func (d *Reader) storePending() {
	r := &d.rec
	r.mu.Lock()
	if r.storing || len(r.pending) == 0 {
		r.mu.Unlock()
		return
	}
	r.storing = true
	r.bg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.bg.Done()
		for d.storeProvable() {
		}
	}()
}

// maxLearn bounds the leaves one pass fetches to learn the tree around
// pending blocks that reads alone did not prove (parity leaves at the
// tree's right edge, say, which sequential readers never touch).
const maxLearn = 16

// learnMissing fetches, for pending blocks that cannot be proved, one leaf
// (with its proof) of the lowest unknown subtree on each one's path.
// It reports whether anything was learnt.
func (d *Reader) learnMissing(ctx context.Context) bool {
	r := &d.rec
	r.mu.Lock()
	var want []uint64
	seen := map[int]bool{}
	for j := range r.pending {
		from, to, ok := r.tree.Missing(int(j))
		if !ok || seen[from] {
			continue
		}
		seen[from] = true
		for k := from; k < to; k++ {
			if _, lost := r.pending[uint64(k)]; !lost {
				want = append(want, uint64(k))
				break
			}
		}
		if len(want) >= maxLearn {
			break
		}
	}
	r.mu.Unlock()
	learnt := false
	for _, k := range want {
		leaf, _, err := d.fetch(ctx, k, store.Background)
		if err != nil {
			continue
		}
		r.mu.Lock()
		learnProof(r.tree, leaf)
		r.mu.Unlock()
		learnt = true
	}
	return learnt
}

// storeProvable stores what it can prove; it reports whether more was
// learnt meanwhile and another pass is worth it.
func (d *Reader) storeProvable() (again bool) {
	r := &d.rec
	m := d.Manifest
	root, err := store.Digest(m.TreeCID)
	if err != nil {
		return false
	}
	type ready struct {
		leaf store.Leaf
		b    store.Block
	}
	var out []ready
	r.mu.Lock()
	for j, b := range r.pending {
		p, err := r.tree.Proof(int(j))
		if err != nil {
			continue
		}
		digest, err := store.Digest(b.CID)
		if err == nil {
			err = p.Verify(digest, root)
		}
		if err != nil {
			d.cfg.Logger.Warn("rebuilt block does not prove against the tree; dropped", "cid", store.CIDText(d.CID), "index", j, "err", err)
			delete(r.pending, j)
			continue
		}
		out = append(out, ready{store.Leaf{Tree: m.TreeCID, Index: j, Block: b.CID, Proof: p.Marshal()}, b})
	}
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(d.cfg.Life, 30*time.Second)
	defer cancel()
	for _, x := range out {
		err := d.cfg.Store.PutLeafBlock(ctx, x.leaf, x.b)
		switch {
		case errors.Is(err, store.ErrClosed) || ctx.Err() != nil && d.cfg.Life.Err() != nil:
			// Config.Life is over (the node closes): the block stays decodable.
			d.cfg.Logger.Debug("rebuilt block not stored: store closed", "cid", store.CIDText(d.CID), "index", x.leaf.Index)
		case err != nil:
			d.cfg.Logger.Warn("storing a rebuilt block failed", "cid", store.CIDText(d.CID), "index", x.leaf.Index, "err", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range out {
		delete(r.pending, x.leaf.Index)
	}
	// Proofs learnt while we stored may make more provable.
	if r.anyProvable() {
		return true
	}
	if len(r.pending) > 0 && !r.learning {
		// What reads did not teach, ask for: once per batch of decodes, so
		// a reader still streaming is not slowed by it.
		r.learning = true
		r.mu.Unlock()
		learnt := d.learnMissing(ctx)
		r.mu.Lock()
		r.learning = false
		// Readers' proofs that arrived while we fetched found storing
		// set and left their blocks to this run: look again, or they
		// would wait for the next read.
		if learnt || r.anyProvable() {
			return true
		}
	}
	r.storing = false
	return false
}

// anyProvable reports whether a pending block can be proved now. r.mu held.
func (r *recovery) anyProvable() bool {
	for j := range r.pending {
		if _, err := r.tree.Proof(int(j)); err == nil {
			return true
		}
	}
	return false
}

// WaitStored waits until the background storing of rebuilt blocks that can
// be proved so far is done.
func (d *Reader) WaitStored() { d.rec.bg.Wait() }

// Decodes is how many codewords this reader has decoded, and Recovered how
// many blocks not held here those decodes rebuilt: every block that could
// not be had, and any that had merely not arrived when enough others had.
func (d *Reader) Decodes() uint64   { return d.rec.decodes.Load() }
func (d *Reader) Recovered() uint64 { return d.rec.recovered.Load() }
