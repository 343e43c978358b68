// Package dataset reads a dataset by offset: it maps offsets to blocks,
// fetches the blocks a read spans through the store it is given (the local
// store, and the network behind it), fetches ahead of a sequential reader,
// waits for a block for as long as its peers are heard from, and decodes a
// block nobody has, or one overdue, from the rest of its erasure codeword,
// storing what it rebuilt once it is proved against the tree.
//
// Everything a reader depends on is handed to it in a Config when it is
// made, so that it can be tested over the memory store with a fake
// exchange, and the node only wires it.
package dataset

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
)

// Config is what a reader is made with; only Store is required.
type Config struct {
	// Store is what blocks are read through and rebuilt blocks stored
	// into: the local store, or a store.NetworkStore over it.
	Store store.BlockStore
	// Fetcher, when set, is what blocks not at hand are read through
	// instead, with each fetch's priority (a store.NetworkStore over
	// Store); nil: Store.GetLeaf, every read alike.
	Fetcher Fetcher
	// Local is the store under Store that holds what is here already:
	// read-ahead skips the blocks it holds. Nil: no read-ahead, which
	// only pays where blocks come from the network.
	Local store.BlockStore
	// Leaves, when set, reads blocks held here in place (the local
	// store's store.LeafReader); nil: every read goes through Store.
	Leaves store.LeafReader
	// Cache holds recent blocks, shared among the readers of a node
	// (see Cache); nil: a small one of the reader's own.
	Cache *Cache
	// Hold, when set, keeps the dataset from garbage collection while a
	// read or a fetch ahead runs (and counts as an access); Release ends
	// the claim the opener took, on Close.
	Hold    func(ctx context.Context) (release func(), err error)
	Release func()
	// BlockTimeout bounds the wait for one block from the network before
	// its codeword is decoded instead (or the read fails); 0: ctx only.
	// With Progress at hand it bounds silence, not the wait: see
	// patience.go.
	BlockTimeout time.Duration
	// HedgeAfter is how long the peers serving a protected dataset may be
	// silent while a read waits on one of its blocks before the block's
	// codeword is decoded as well; 0: only once the fetch has failed.
	HedgeAfter time.Duration
	// Prefetch is how many blocks past a sequential read are fetched
	// ahead of the reader; 0 disables.
	Prefetch int
	// Progress, when set, is the exchange's: a wait for a block lasts
	// while the peers serving it are heard from.
	Progress Progress
	// FailHint, when set, says what the node knows of why peers may not
	// serve a dataset (some are behind a relay, say); it is added to the
	// error of a read the network could not serve.
	FailHint func() string
	// Logger: nil is slog.Default().
	Logger *slog.Logger
	// Life ends the reader's background work (fetches ahead, storing
	// rebuilt blocks) when it ends; nil: never.
	Life context.Context
	// Counters, when set, add up cache and decode figures across readers.
	Counters *Counters
}

// Fetcher gets a block, from the local store or else the network, at a
// priority: reads before read-ahead and copies (store.NetworkStore).
type Fetcher interface {
	FetchLeaf(ctx context.Context, tree cid.Cid, index uint64, prio store.Priority) (store.Leaf, store.Block, error)
}

// Counters are the figures of every reader made with them, for metrics.
type Counters struct {
	CacheHits, CacheMisses atomic.Uint64
	// Decodes counts codewords decoded, Recovered the blocks not held
	// here that they rebuilt.
	Decodes, Recovered atomic.Uint64
	// Hedges counts reads that decoded a block while its fetch was overdue.
	Hedges atomic.Uint64
}

// Reader reads one dataset by offset: the seed's Node/StoreStream. It cuts
// the padding off the last block, and when a data block cannot be had it
// decodes that block's codeword from parity. It is safe for concurrent use.
type Reader struct {
	CID      cid.Cid
	Manifest *manifest.Manifest

	cfg    Config         // Logger, Life and Counters are never nil
	layout erasure.Layout // valid when Manifest.Protected
	coder  *erasure.Coder
	cache  treeCache
	rec    recovery // erasure decoding state, see decode.go

	pmu        sync.Mutex
	lastEnd    int64               // where the previous read ended
	prefetched uint64              // prefetch has been started up to here
	inflight   map[uint64]struct{} // blocks being prefetched
	closing    bool                // Close has begun: no more fetches ahead
	ahead      sync.WaitGroup      // the goroutines fetching them
	// aheadCtx ends the fetches ahead: at Close (nobody reads on), or
	// with Config.Life. It is made for aheadRuns, the prefetch passes
	// running, and ended with the last of them (readahead.go).
	aheadCtx  context.Context
	stopAhead context.CancelFunc
	aheadRuns int
	closed    sync.Once
	released  sync.Once // of Config.Release
}

// Open reads the manifest of c through cfg.Store and makes a reader of it.
func Open(ctx context.Context, c cid.Cid, cfg Config) (*Reader, error) {
	_, m, err := manifest.Read(ctx, cfg.Store, c)
	if err != nil {
		return nil, err
	}
	return New(c, m, cfg)
}

// New makes a reader of dataset c, whose manifest m was read already.
// It fails only for a manifest whose erasure layout does not add up.
func New(c cid.Cid, m *manifest.Manifest, cfg Config) (*Reader, error) {
	if cfg.Cache == nil {
		cfg.Cache = NewCache(ownCacheBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Life == nil {
		cfg.Life = context.Background()
	}
	if cfg.Counters == nil {
		cfg.Counters = new(Counters)
	}
	d := &Reader{CID: c, Manifest: m, cfg: cfg, cache: cfg.Cache.tree(m.TreeCID), inflight: map[uint64]struct{}{}}
	if m.Protected {
		var err error
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

// ownCacheBytes is the block cache of a reader made without one (a node
// shares one cache among its readers): enough for the kernel's reads that
// straddle blocks and for one decoded codeword.
const ownCacheBytes = 2 << 20

// Close ends the reader's claim on the dataset: a dataset the node opened
// is not garbage collected until it is closed. Reads still work after
// Close (each holds the dataset while it runs), but read ahead no more.
// Close is idempotent.
func (d *Reader) Close() error {
	d.closed.Do(func() {
		// Fetches ahead hold the dataset (Hold) while they run: stopped
		// and waited for, so that once Close returns nothing of this
		// reader keeps it from garbage collection.
		d.pmu.Lock()
		d.closing = true
		if d.stopAhead != nil {
			d.stopAhead()
		}
		d.pmu.Unlock()
		d.ahead.Wait()
		d.Release()
	})
	return nil
}

// Release ends the claim the open took on the dataset (Config.Release)
// and leaves the reader working, read-ahead and all: each read and each
// fetch ahead holds the dataset while it runs, and none starts without a
// read. It is for a reader kept for as long as something may read through
// it, with nothing to say when that ends (the mount keeps one per inode
// the kernel knows), which must not keep the dataset from collection in
// between. Fetches ahead end at the latest with their timeouts or
// Config.Life. Release is idempotent, and Close releases too.
func (d *Reader) Release() {
	d.released.Do(func() {
		if d.cfg.Release != nil {
			d.cfg.Release()
		}
	})
}

// Size is the original file size.
func (d *Reader) Size() int64 { return int64(d.Manifest.Size()) }

// Attrs are the manifest fields the mount exposes as user.meshfs.* xattrs.
func (d *Reader) Attrs() map[string]string {
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
func (d *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	size := d.Size()
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", store.CIDText(d.CID), off)
	}
	if off >= size {
		return 0, io.EOF
	}
	if d.cfg.Hold != nil {
		release, err := d.cfg.Hold(ctx)
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
			return 0, fmt.Errorf("read %s at %d%s: %w", store.CIDText(d.CID), off, d.hint(ctx), err)
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
func (d *Reader) readAtHand(ctx context.Context, i uint64, p []byte, off int64) (n int, fromCache, ok bool) {
	if data, ok := d.cache.get(i); ok {
		d.cfg.Counters.CacheHits.Add(1)
		return copy(p, data[off:]), true, true
	}
	if d.cfg.Leaves == nil {
		return 0, false, false
	}
	p = p[:min(int64(len(p)), int64(d.Manifest.BlockSize)-off)]
	n, err := d.cfg.Leaves.ReadLeaf(ctx, d.Manifest.TreeCID, i, p, off)
	if err != nil || n != len(p) {
		return 0, false, false
	}
	d.cfg.Counters.CacheMisses.Add(1)
	return n, false, true
}

// readParallel bounds the blocks one read fetches at once.
const readParallel = 16

// blocks returns blocks first..last, fetching them concurrently.
func (d *Reader) blocks(ctx context.Context, first, last uint64) ([][]byte, error) {
	out := make([][]byte, last-first+1)
	if len(out) == 1 {
		b, err := d.block(ctx, first, store.Read)
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
			b, err := d.block(ctx, first+uint64(k), store.Read)
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

// Reader adapts the dataset to io.ReadSeeker for HTTP range serving; reads
// run under ctx.
func (d *Reader) Reader(ctx context.Context) io.ReadSeeker {
	return io.NewSectionReader(ctxReaderAt{ctx, d}, 0, d.Size())
}

type ctxReaderAt struct {
	ctx context.Context
	d   *Reader
}

func (r ctxReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.d.ReadAt(r.ctx, p, off) }
