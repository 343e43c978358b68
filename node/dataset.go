package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
)

// Dataset reads one dataset by offset: the seed's Node/StoreStream. It maps
// offsets to block indices, cuts the padding off the last block, and when a
// data block cannot be had it decodes that block's codeword from parity.
// It is safe for concurrent use; readers share a small cache of recent blocks.
type Dataset struct {
	CID      cid.Cid
	Manifest *manifest.Manifest

	st     store.BlockStore
	held   store.LeafReader // the local store's fast path, when it has one
	layout erasure.Layout   // valid when Manifest.Protected
	coder  *erasure.Coder
	cache  treeCache

	// BlockTimeout bounds the wait for one block from the network before
	// its codeword is decoded instead (or the read fails); 0: ctx only.
	// With the exchange's progress at hand it bounds silence, not the
	// wait: see patience.go.
	BlockTimeout time.Duration
	// HedgeAfter is how long the peers serving a protected dataset may be
	// silent while a read waits on one of its blocks before the block's
	// codeword is decoded as well; 0: only once the fetch has failed.
	HedgeAfter time.Duration
	// Prefetch is how many blocks past a sequential read are fetched
	// ahead of the reader from the network; 0 disables.
	Prefetch int

	rec recovery // erasure decoding state, see decode.go
	// progress, when set, is the exchange's: a wait for a block lasts
	// while the peers serving it are heard from (patience.go).
	progress progress

	// counters, when set, are the node's: cache and decode figures for
	// its metrics.
	counters *readCounters
	// log, when set, is the node's logger; life, when set, ends when the
	// node closes, and with it the dataset's background work.
	log  *slog.Logger
	life context.Context

	pmu        sync.Mutex
	lastEnd    int64               // where the previous read ended
	prefetched uint64              // prefetch has been started up to here
	inflight   map[uint64]struct{} // blocks being prefetched

	// Set by the node (gc.go): mblock is the manifest block as read; hold
	// keeps the dataset from garbage collection while a read or prefetch
	// runs, and counts as an access; release ends the hold Open took.
	mblock  store.Block
	hold    func(ctx context.Context) (func(), error)
	release func()
	closed  sync.Once
}

// localer is the NetworkStore's view of what is held here already.
type localer interface{ Local() store.BlockStore }

// readManifest reads and decodes the manifest block c from st.
func readManifest(ctx context.Context, st store.BlockStore, c cid.Cid) (store.Block, *manifest.Manifest, error) {
	if c.Type() != store.CodecManifest {
		return store.Block{}, nil, fmt.Errorf("open %s: not a manifest CID (codec %s): %w", store.CIDText(c), store.CodecName(c.Type()), store.ErrNotFound)
	}
	b, err := st.Get(ctx, c)
	if err != nil {
		return store.Block{}, nil, fmt.Errorf("open %s: manifest: %w", store.CIDText(c), err)
	}
	m, err := manifest.FromBlock(b)
	if err != nil {
		return store.Block{}, nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	return b, m, nil
}

// OpenDataset reads the manifest of c from st and prepares a reader over it.
func OpenDataset(ctx context.Context, st store.BlockStore, c cid.Cid) (*Dataset, error) {
	b, m, err := readManifest(ctx, st, c)
	if err != nil {
		return nil, err
	}
	d := &Dataset{CID: c, Manifest: m, st: st, cache: newTreeCache(newBlockCache(ownCacheBytes), m.TreeCID), inflight: map[uint64]struct{}{}, mblock: b}
	d.held, _ = st.(store.LeafReader)
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

// ownCacheBytes is the block cache of a dataset opened on its own (not
// through a node, which shares one cache among its datasets): enough for
// the kernel's reads that straddle blocks and for one decoded codeword.
const ownCacheBytes = 2 << 20

// Close ends the reader's claim on the dataset: a dataset the node opened
// is not garbage collected until it is closed. Reads still work after
// Close (each holds the dataset while it runs). Close is idempotent.
func (d *Dataset) Close() error {
	d.closed.Do(func() {
		if d.release != nil {
			d.release()
		}
	})
	return nil
}

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
	if d.hold != nil {
		release, err := d.hold(ctx)
		if err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", store.CIDText(d.CID), off, err)
		}
		defer release()
	}
	want := p
	if rest := size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	bs := int64(d.Manifest.BlockSize)
	first, last := uint64(off/bs), uint64((off+int64(len(want))-1)/bs)
	// The leading blocks at hand are copied in order; from the first that
	// is not, the rest of the read is fetched in parallel.
	n, i, cached := 0, first, false
	for ; i <= last; i++ {
		k, fromCache, ok := d.readAtHand(ctx, i, want[n:], (off+int64(n))%bs)
		if !ok {
			break
		}
		n += k
		cached = cached || fromCache
	}
	d.readAhead(off, int64(len(want)), last, i > last && !cached)
	if i <= last {
		blocks, err := d.blocks(ctx, i, last)
		if err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", store.CIDText(d.CID), off, err)
		}
		for _, data := range blocks {
			pos := off + int64(n)
			n += copy(want[n:], data[pos%bs:])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readAtHand copies block i from byte off of it on into p, as far as the
// block goes, if the block is in the cache or held here, and reports
// whether it was and where from. Anything else, a failing store included,
// is left to block, which fetches, decodes or reports the error.
func (d *Dataset) readAtHand(ctx context.Context, i uint64, p []byte, off int64) (n int, fromCache, ok bool) {
	if data, ok := d.cache.get(i); ok {
		if d.counters != nil {
			d.counters.cacheHits.Add(1)
		}
		return copy(p, data[off:]), true, true
	}
	if d.held == nil {
		return 0, false, false
	}
	p = p[:min(int64(len(p)), int64(d.Manifest.BlockSize)-off)]
	n, err := d.held.ReadLeaf(ctx, d.Manifest.TreeCID, i, p, off)
	if err != nil || n != len(p) {
		return 0, false, false
	}
	if d.counters != nil {
		d.counters.cacheMisses.Add(1)
	}
	return n, false, true
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
// reader's next call. Blocks already held locally are skipped.
//
// A read that found all its blocks held, past any window fetched ahead,
// starts none: a local dataset would pay an index lookup per block to
// find nothing to fetch. Within a window it does, since a block fetched
// ahead may be found stored before it is cached.
func (d *Dataset) readAhead(off, n int64, last uint64, held bool) {
	l, ok := d.st.(localer)
	if !ok || d.Prefetch <= 0 {
		return
	}
	d.pmu.Lock()
	sequential := off == d.lastEnd
	d.lastEnd = off + n
	if held && last >= d.prefetched {
		d.pmu.Unlock()
		return
	}
	from := max(last+1, d.prefetched)
	// Only the file's own blocks: parity rows are for decoding, never read.
	to := min(last+uint64(d.Prefetch), d.Manifest.DataBlocks()-1)
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
	if len(todo) > 0 {
		go d.prefetch(l.Local(), todo)
	}
}

// prefetch looks up, in order, which of todo are held already and fetches
// the others, each in a goroutine of its own. For a local dataset it is one
// goroutine and an index lookup per block: the mount's warm reads pay no
// more. It runs within the node's life (Dataset.life), not past Close.
func (d *Dataset) prefetch(local store.BlockStore, todo []uint64) {
	life := d.lifetime()
	done := func(i uint64) {
		d.pmu.Lock()
		delete(d.inflight, i)
		d.pmu.Unlock()
	}
	for _, i := range todo {
		if has, err := local.HasLeaf(life, d.Manifest.TreeCID, i); err != nil || has {
			done(i)
			continue
		}
		go func() {
			defer done(i)
			ctx, cancel := context.WithTimeout(store.Background(life), max(d.BlockTimeout, 10*time.Second))
			defer cancel()
			if d.hold != nil {
				release, err := d.hold(ctx)
				if err != nil {
					return
				}
				defer release()
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
		if d.counters != nil {
			d.counters.cacheHits.Add(1)
		}
		return data, nil
	}
	if d.counters != nil {
		d.counters.cacheMisses.Add(1)
	}
	fctx, cancel, h := d.hedged(ctx, i)
	leaf, data, err := d.fetch(fctx, i)
	cancel()
	decoded, won := h.end()
	if err == nil {
		d.cache.put(i, data)
		d.learnLeaf(leaf)
		return data, nil
	}
	if won {
		return decoded, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("block %d: %w", i, ctx.Err())
	}
	if !d.Manifest.Protected || !unavailable(err) {
		return nil, fmt.Errorf("block %d: %w", i, err)
	}
	return d.decode(ctx, i, err)
}

// fetch gets one stored block, with its leaf, within the dataset's
// patience (patience.go).
func (d *Dataset) fetch(ctx context.Context, i uint64) (store.Leaf, []byte, error) {
	ctx, stop := d.patient(ctx)
	defer stop()
	l, b, err := d.st.GetLeaf(ctx, d.Manifest.TreeCID, i)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", err, cause)
		}
		return store.Leaf{}, nil, err
	}
	if uint64(len(b.Data)) != d.Manifest.BlockSize {
		// The tree names it, proof and all, but the manifest says every
		// block is BlockSize: the dataset is malformed. Reads cut blocks
		// by that size, so such a block would be read past its end, or
		// give bytes that depend on where a read starts. It is not kept
		// either (the exchange stores what it verified before we see it),
		// so that no later read finds it held.
		if err := d.st.DeleteLeaf(context.WithoutCancel(ctx), d.Manifest.TreeCID, i); err != nil {
			d.logger().Warn("drop a block of the wrong size", "cid", store.CIDText(d.CID), "index", i, "err", err)
		}
		return store.Leaf{}, nil, fmt.Errorf("block %d is %d bytes, not the manifest's block size of %d: %w",
			i, len(b.Data), d.Manifest.BlockSize, store.ErrInvalidBlock)
	}
	return l, b.Data, nil
}

// unavailable tells errors that mean "nobody had it in time" from others.
func unavailable(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, context.DeadlineExceeded)
}

// lifetime is the context the dataset's background work runs in.
func (d *Dataset) lifetime() context.Context {
	if d.life != nil {
		return d.life
	}
	return context.Background()
}

func (d *Dataset) logger() *slog.Logger {
	if d.log != nil {
		return d.log
	}
	return slog.Default()
}
