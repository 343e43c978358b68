package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/erasure"
	"github.com/meshfs/meshfs/node/manifest"
	"github.com/meshfs/meshfs/node/merkle"
	"github.com/meshfs/meshfs/store"
)

// Dataset reads one dataset by offset: the seed's Node/StoreStream. It maps
// offsets to block indices, cuts the padding off the last block, and when a
// data block cannot be had it decodes that block's codeword from parity.
// It is safe for concurrent use; readers share a small cache of recent blocks.
type Dataset struct {
	CID      cid.Cid
	Manifest *manifest.Manifest

	st     store.BlockStore
	layout erasure.Layout // valid when Manifest.Protected
	coder  *erasure.Coder
	cache  *blockCache

	// BlockTimeout bounds the wait for one block from the network before
	// its codeword is decoded instead (or the read fails); 0: ctx only.
	BlockTimeout time.Duration
	// Prefetch is how many blocks past a sequential read are fetched
	// ahead of the reader from the network; 0 disables.
	Prefetch int

	dmu       sync.Mutex
	decoding  map[uint64]*decodeCall // codewords being decoded
	rebuilt   map[uint64][]byte      // rebuilt blocks until they are stored
	decodes   atomic.Uint64
	recovered atomic.Uint64
	bg        sync.WaitGroup // storing rebuilt blocks

	pmu        sync.Mutex
	lastEnd    int64               // where the previous read ended
	prefetched uint64              // prefetch has been started up to here
	inflight   map[uint64]struct{} // blocks being prefetched
}

// localer is the NetworkStore's view of what is held here already.
type localer interface{ Local() store.BlockStore }

// OpenDataset reads the manifest of c from st and prepares a reader over it.
func OpenDataset(ctx context.Context, st store.BlockStore, c cid.Cid) (*Dataset, error) {
	if c.Type() != store.CodecManifest {
		return nil, fmt.Errorf("open %s: not a manifest CID (codec %s): %w", store.CIDText(c), store.CodecName(c.Type()), store.ErrNotFound)
	}
	b, err := st.Get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("open %s: manifest: %w", store.CIDText(c), err)
	}
	m, err := manifest.FromBlock(b)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	d := &Dataset{CID: c, Manifest: m, st: st, cache: newBlockCache(cacheBlocks), inflight: map[uint64]struct{}{}, decoding: map[uint64]*decodeCall{}, rebuilt: map[uint64][]byte{}}
	if m.Protected {
		if d.layout, err = erasure.NewLayout(m.EcK, m.EcM, m.DataBlocks()); err != nil {
			return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
		}
		if d.layout.Total() != m.Blocks() {
			return nil, fmt.Errorf("open %s: manifest has %d blocks, its erasure layout %d", store.CIDText(c), m.Blocks(), d.layout.Total())
		}
		if d.coder, err = erasure.NewCoder(m.EcK, m.EcM); err != nil {
			return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
		}
	}
	return d, nil
}

// cacheBlocks bounds the per-dataset block cache: enough for the kernel's
// 128 KiB–1 MiB reads that straddle blocks and for one decoded codeword.
const cacheBlocks = 32

// Size is the original file size.
func (d *Dataset) Size() int64 { return int64(d.Manifest.Size()) }

// Attrs are the manifest fields the mount exposes as user.meshfs.* xattrs.
func (d *Dataset) Attrs() map[string]string {
	m := d.Manifest
	a := map[string]string{
		"treecid":   store.CIDText(m.TreeCID),
		"blocksize": strconv.FormatUint(m.BlockSize, 10),
		"size":      strconv.FormatUint(m.Size(), 10),
		"protected": strconv.FormatBool(m.Protected),
		"eck":       strconv.Itoa(m.EcK),
		"ecm":       strconv.Itoa(m.EcM),
	}
	if m.Filename != "" {
		a["filename"] = m.Filename
	}
	if m.Mimetype != "" {
		a["mimetype"] = m.Mimetype
	}
	return a
}

// ReadAt fills p from offset off, like io.ReaderAt: a short count only at the
// end of the file, with io.EOF. The blocks a read spans are fetched in
// parallel, and a sequential reader has the next blocks fetched ahead of it.
func (d *Dataset) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	size := d.Size()
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", store.CIDText(d.CID), off)
	}
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if rest := size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	bs := int64(d.Manifest.BlockSize)
	first, last := uint64(off/bs), uint64((off+int64(len(want))-1)/bs)
	d.readAhead(off, int64(len(want)), last)
	blocks, err := d.blocks(ctx, first, last)
	if err != nil {
		return 0, fmt.Errorf("read %s at %d: %w", store.CIDText(d.CID), off, err)
	}
	n := 0
	for _, data := range blocks {
		pos := off + int64(n)
		n += copy(want[n:], data[pos%bs:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readParallel bounds the blocks one read fetches at once.
const readParallel = 16

// blocks returns blocks first..last, fetching them concurrently.
func (d *Dataset) blocks(ctx context.Context, first, last uint64) ([][]byte, error) {
	out := make([][]byte, last-first+1)
	if len(out) == 1 {
		b, err := d.block(ctx, first)
		out[0] = b
		return out, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		sem      = make(chan struct{}, readParallel)
	)
	for k := range out {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			b, err := d.block(ctx, first+uint64(k))
			if err != nil {
				once.Do(func() { firstErr = err; cancel() })
				return
			}
			out[k] = b
		}()
	}
	wg.Wait()
	return out, firstErr
}

// readAhead starts fetching the blocks after a sequential read, so the
// exchange keeps a window of requests in flight instead of waiting for the
// reader's next call. Blocks already held locally are skipped: for a local
// dataset read-ahead costs nothing.
func (d *Dataset) readAhead(off, n int64, last uint64) {
	l, ok := d.st.(localer)
	if !ok || d.Prefetch <= 0 {
		return
	}
	d.pmu.Lock()
	sequential := off == d.lastEnd
	d.lastEnd = off + n
	from := max(last+1, d.prefetched)
	to := min(last+uint64(d.Prefetch), d.Manifest.Blocks()-1)
	if !sequential || from > to {
		d.pmu.Unlock()
		return
	}
	d.prefetched = to + 1
	var todo []uint64
	for i := from; i <= to; i++ {
		if _, busy := d.inflight[i]; !busy && !(d.Manifest.Protected && d.layout.IsPadding(i)) {
			d.inflight[i] = struct{}{}
			todo = append(todo, i)
		}
	}
	d.pmu.Unlock()
	for _, i := range todo {
		go func() {
			defer func() {
				d.pmu.Lock()
				delete(d.inflight, i)
				d.pmu.Unlock()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), max(d.BlockTimeout, 10*time.Second))
			defer cancel()
			if has, err := l.Local().HasLeaf(ctx, d.Manifest.TreeCID, i); err != nil || has {
				return
			}
			// The block lands in the local store; the reader finds it there.
			_, _ = d.block(ctx, i)
		}()
	}
}

// Reader adapts the dataset to io.ReadSeeker for HTTP range serving; reads
// run under ctx.
func (d *Dataset) Reader(ctx context.Context) io.ReadSeeker {
	return io.NewSectionReader(ctxReaderAt{ctx, d}, 0, d.Size())
}

type ctxReaderAt struct {
	ctx context.Context
	d   *Dataset
}

func (r ctxReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.d.ReadAt(r.ctx, p, off) }

// block returns the bytes of block i, from the cache, the store (local, or
// the network within BlockTimeout), or by decoding its codeword.
func (d *Dataset) block(ctx context.Context, i uint64) ([]byte, error) {
	if data, ok := d.cache.get(i); ok {
		return data, nil
	}
	_, data, err := d.fetch(ctx, i)
	if err == nil {
		d.cache.put(i, data)
		return data, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("block %d: %w", i, ctx.Err())
	}
	if !d.Manifest.Protected || !unavailable(err) {
		return nil, fmt.Errorf("block %d: %w", i, err)
	}
	return d.decode(ctx, i, err)
}

// fetch gets one stored block, with its leaf, within BlockTimeout.
func (d *Dataset) fetch(ctx context.Context, i uint64) (store.Leaf, []byte, error) {
	if d.BlockTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.BlockTimeout)
		defer cancel()
	}
	l, b, err := d.st.GetLeaf(ctx, d.Manifest.TreeCID, i)
	if err != nil {
		return store.Leaf{}, nil, err
	}
	return l, b.Data, nil
}

// unavailable tells errors that mean "nobody had it in time" from others.
func unavailable(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, context.DeadlineExceeded)
}

// decode returns block i rebuilt from its codeword. Concurrent reads of
// blocks of one codeword share a single decode.
func (d *Dataset) decode(ctx context.Context, i uint64, cause error) ([]byte, error) {
	col := d.layout.Column(i)
	d.dmu.Lock()
	// A decode of this codeword may have finished while our fetch failed:
	// its blocks are in the cache (put there before the call ends).
	if data, ok := d.cache.get(i); ok {
		d.dmu.Unlock()
		return data, nil
	}
	if data, ok := d.rebuilt[i]; ok {
		d.dmu.Unlock()
		return data, nil
	}
	call := d.decoding[col]
	if call == nil {
		call = &decodeCall{done: make(chan struct{})}
		d.decoding[col] = call
		go func() {
			// Detached from this reader's ctx so that one reader giving up
			// does not fail the others waiting on the same codeword; bounded
			// by BlockTimeout per shard inside.
			call.blocks, call.err = d.decodeColumn(context.WithoutCancel(ctx), col, i, cause)
			d.dmu.Lock()
			delete(d.decoding, col)
			d.dmu.Unlock()
			close(call.done)
		}()
	}
	d.dmu.Unlock()
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

type decodeCall struct {
	done   chan struct{}
	blocks map[uint64][]byte
	err    error
}

// decodeColumn rebuilds the data blocks of codeword col that cannot be had,
// from any K blocks of it fetched in parallel; the first K to arrive win
// and the rest are cancelled. Only this codeword is decoded, on demand.
// Rebuilt blocks go to the cache at once, and to the store (with proofs,
// so they are served to peers like any other) in the background.
func (d *Dataset) decodeColumn(ctx context.Context, col, lost uint64, cause error) (map[uint64][]byte, error) {
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
	results := make(chan got, len(idx))
	for row, j := range idx {
		if l.IsPadding(j) {
			results <- got{row: row, data: make([]byte, d.Manifest.BlockSize)}
			continue
		}
		go func() {
			leaf, data, err := d.fetch(fctx, j)
			if err != nil {
				data = nil
			}
			results <- got{row, leaf, data}
		}()
	}
	have := 0
	failed := make([]bool, len(idx))
	for pending := len(idx); pending > 0 && have < l.K; pending-- {
		r := <-results
		if r.data != nil {
			shards[r.row], leaves[r.row] = r.data, r.leaf
			have++
		} else {
			failed[r.row] = true
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
	d.decodes.Add(1)
	// Rows that simply had not arrived when K others had are rebuilt too,
	// but only those known to be unavailable count as recovered and are
	// stored: the others are held somewhere already.
	rebuilt := make(map[uint64][]byte, len(need))
	for _, row := range need {
		j := idx[row]
		if l.IsPadding(j) {
			continue
		}
		if !failed[row] && j != lost {
			if held, err := d.st.HasLeaf(ctx, d.Manifest.TreeCID, j); err != nil || held {
				continue
			}
		}
		rebuilt[j] = shards[row]
	}
	// Every data block of the codeword is known now, fetched or rebuilt:
	// hand them all to the waiting readers and the cache.
	out := make(map[uint64][]byte, l.K)
	for row := 0; row < l.K; row++ {
		if j := idx[row]; !l.IsPadding(j) {
			out[j] = shards[row]
			d.cache.put(j, shards[row])
		}
	}
	d.recovered.Add(uint64(len(rebuilt)))
	// Until they are stored, rebuilt blocks stay at hand (the cache may
	// evict them) so that no reader decodes the same codeword again.
	d.dmu.Lock()
	for j, b := range rebuilt {
		d.rebuilt[j] = b
	}
	d.dmu.Unlock()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.keepRecovered(col, idx, shards, leaves, rebuilt)
		d.dmu.Lock()
		for j := range rebuilt {
			delete(d.rebuilt, j)
		}
		d.dmu.Unlock()
	}()
	return out, nil
}

// keepRecovered stores blocks rebuilt by decoding, each with a Merkle proof
// built from what is known of the tree: the proofs of the blocks that fed
// the decoder and, where those do not reach, the proof of the rebuilt
// block's neighbour. A block whose proof cannot be built is not stored
// (it stays decodable); nothing unproved is ever kept.
func (d *Dataset) keepRecovered(col uint64, idx []uint64, shards [][]byte, leaves []store.Leaf, rebuilt map[uint64][]byte) {
	ctx, cancel := context.WithTimeout(context.Background(), max(d.BlockTimeout, 10*time.Second))
	defer cancel()
	// Neighbouring lost blocks are often being rebuilt by decodes of other
	// codewords right now; their results (in the cache) fill in the tree.
	d.dmu.Lock()
	var others []*decodeCall
	for other, c := range d.decoding {
		if other != col {
			others = append(others, c)
		}
	}
	d.dmu.Unlock()
	for _, c := range others {
		select {
		case <-c.done:
		case <-ctx.Done():
			return
		}
	}
	m := d.Manifest
	root, err := store.Digest(m.TreeCID)
	if err != nil {
		return
	}
	sp, err := merkle.NewSparse(int(m.Blocks()))
	if err != nil {
		return
	}
	for row, j := range idx {
		switch {
		case d.layout.IsPadding(j):
			sp.AddLeaf(int(j), erasure.PaddingDigest)
		case shards[row] != nil && leaves[row].Proof != nil:
			learn(sp, leaves[row].Proof, shards[row])
		}
	}
	for j, data := range rebuilt {
		digest := sha256.Sum256(data)
		sp.AddLeaf(int(j), digest)
		d.learnAround(ctx, sp, j)
		proof, err := sp.Proof(int(j))
		if err == nil {
			err = proof.Verify(digest, root)
		}
		if err != nil {
			slog.Debug("rebuilt block not stored: no proof", "cid", store.CIDText(d.CID), "index", j, "err", err)
			continue
		}
		b := store.Block{CID: store.CIDFromDigest(store.CodecBlock, digest), Data: data}
		leaf := store.Leaf{Tree: m.TreeCID, Index: j, Block: b.CID, Proof: proof.Marshal()}
		if err := d.st.Put(ctx, b); err == nil {
			err = d.st.PutLeaf(ctx, leaf)
		}
		if err != nil {
			slog.Warn("storing a rebuilt block failed", "cid", store.CIDText(d.CID), "index", j, "err", err)
		}
	}
}

// maxLearn bounds the leaves fetched to learn the tree around one rebuilt
// block: each fills at least one level of its path.
const maxLearn = 16

// learnAround fills in what sp lacks to prove leaf j: for the lowest
// unknown sibling subtree on j's path, padding leaves and blocks the
// decoders rebuilt (cached) are added as digests, and the proof of one of
// its leaves (held here or fetched) fills the rest.
func (d *Dataset) learnAround(ctx context.Context, sp *merkle.Sparse, j uint64) {
	fetches := 0
	lastFrom, lastTo := -1, -1
	for {
		from, to, ok := sp.Missing(int(j))
		if !ok || (from == lastFrom && to == lastTo) {
			return // provable, or no progress
		}
		lastFrom, lastTo = from, to
		for k := from; k < to; k++ {
			i := uint64(k)
			if d.Manifest.Protected && d.layout.IsPadding(i) {
				sp.AddLeaf(k, erasure.PaddingDigest)
				continue
			}
			if data, ok := d.cache.get(i); ok {
				sp.AddLeaf(k, sha256.Sum256(data))
				if to-from == 1 {
					break
				}
			}
			if fetches >= maxLearn {
				return
			}
			fetches++
			if lf, nd, err := d.fetch(ctx, i); err == nil {
				learn(sp, lf.Proof, nd)
				break
			}
		}
	}
}

// learn adds a stored leaf's proof to sp; a proof that does not decode is
// skipped (it only means less is known).
func learn(sp *merkle.Sparse, encoded []byte, data []byte) {
	if p, err := merkle.UnmarshalProof(encoded); err == nil {
		_ = sp.AddProof(sha256.Sum256(data), p)
	}
}

// WaitStored waits until the blocks rebuilt so far are in the store.
func (d *Dataset) WaitStored() { d.bg.Wait() }

// Decodes is how many codewords this reader has decoded, and Recovered how
// many blocks those decodes rebuilt.
func (d *Dataset) Decodes() uint64   { return d.decodes.Load() }
func (d *Dataset) Recovered() uint64 { return d.recovered.Load() }

// blockCache keeps the most recently used blocks of one dataset. A tiny
// clock of fixed slots is enough: it only has to bridge reads that straddle
// block boundaries and codeword decodes, not act as a general cache (the
// kernel's page cache does that for the mount).
type blockCache struct {
	mu    sync.Mutex
	slots []cacheSlot
	next  int
}

type cacheSlot struct {
	index uint64
	data  []byte
}

func newBlockCache(n int) *blockCache { return &blockCache{slots: make([]cacheSlot, n)} }

func (c *blockCache) get(i uint64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.slots {
		if s.data != nil && s.index == i {
			return s.data, true
		}
	}
	return nil, false
}

func (c *blockCache) put(i uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, s := range c.slots {
		if s.data != nil && s.index == i {
			c.slots[k].data = data
			return
		}
	}
	c.slots[c.next] = cacheSlot{index: i, data: data}
	c.next = (c.next + 1) % len(c.slots)
}
