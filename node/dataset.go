package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/erasure"
	"github.com/meshfs/meshfs/node/manifest"
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
}

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
	d := &Dataset{CID: c, Manifest: m, st: st, cache: newBlockCache(cacheBlocks)}
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
// end of the file, with io.EOF.
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
	n := 0
	for n < len(want) {
		pos := off + int64(n)
		data, err := d.block(ctx, uint64(pos/bs))
		if err != nil {
			return n, fmt.Errorf("read %s at %d: %w", store.CIDText(d.CID), pos, err)
		}
		n += copy(want[n:], data[pos%bs:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
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

// block returns the bytes of block i, from the cache, the store, or by
// decoding its codeword.
func (d *Dataset) block(ctx context.Context, i uint64) ([]byte, error) {
	if data, ok := d.cache.get(i); ok {
		return data, nil
	}
	_, b, err := d.st.GetLeaf(ctx, d.Manifest.TreeCID, i)
	if err == nil {
		d.cache.put(i, b.Data)
		return b.Data, nil
	}
	if !d.Manifest.Protected || !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("block %d: %w", i, err)
	}
	return d.decode(ctx, i, err)
}

// decode rebuilds block i from any K blocks of its codeword. Only this one
// codeword is decoded, on demand; its recovered data blocks go to the cache
// so that neighbouring reads of the same codeword do not decode again.
func (d *Dataset) decode(ctx context.Context, i uint64, cause error) ([]byte, error) {
	l := d.layout
	idx := l.Indices(l.Column(i))
	shards := make([][]byte, len(idx))
	have := 0
	for row, j := range idx {
		if have == l.K {
			break
		}
		if l.IsPadding(j) {
			shards[row] = make([]byte, d.Manifest.BlockSize)
			have++
			continue
		}
		_, b, err := d.st.GetLeaf(ctx, d.Manifest.TreeCID, j)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		shards[row] = b.Data
		have++
	}
	if have < l.K {
		return nil, fmt.Errorf("block %d: %w; codeword %d has %d of the %d blocks needed to decode it", i, cause, l.Column(i), have, l.K)
	}
	var need []int
	for row := 0; row < l.K; row++ {
		if shards[row] == nil {
			need = append(need, row)
		}
	}
	if err := d.coder.Reconstruct(shards, need); err != nil {
		return nil, fmt.Errorf("block %d: decode codeword %d: %w", i, l.Column(i), err)
	}
	var out []byte
	for row := 0; row < l.K; row++ {
		j := idx[row]
		if l.IsPadding(j) {
			continue
		}
		d.cache.put(j, shards[row])
		if j == i {
			out = shards[row]
		}
	}
	return out, nil
}

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
