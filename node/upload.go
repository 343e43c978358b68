package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/merkle"
)

// UploadOptions describe one upload. Zero values take the node's defaults,
// except EcM where a negative value means "the node's default" so that 0 can
// ask for an unprotected dataset.
type UploadOptions struct {
	Filename  string
	Mimetype  string
	BlockSize uint64
	EcK, EcM  int
}

// manifestVersion is Codex's enum position for CIDv1 (not the CID version).
const manifestVersion = 2

// uploader carries the state of one upload so that a failure at any step can
// undo exactly what this upload added and nothing else.
//
// Every block goes into the store as a leaf of a staging tree of the
// upload's own (a random CID no dataset names), so that from the moment it
// is stored it is referenced: by this upload, whatever other uploads or
// datasets hold the same block. The real tree's leaves follow once all
// blocks are hashed, then the manifest, and the staging tree goes last. A
// failed upload drops its staging tree, which frees just the blocks nobody
// else references; a crash leaves it for the node to sweep (trees.go).
type uploader struct {
	st        store.BlockStore
	blockSize uint64
	// keep is how the node holds the trees the upload writes until it is
	// done with them; nil for an upload into a bare store.
	keep treeKeeper
	// commit stores the manifest; nil: st.Put.
	commit  func(ctx context.Context, mb store.Block, m *manifest.Manifest) error
	log     *slog.Logger // nil: slog.Default()
	staging cid.Cid
	staged  uint64
	// leaves lists, for an upload into a bare store, the real tree's
	// leaves it added, which its rollback deletes.
	leaves   []store.Leaf
	held     []cid.Cid // trees held through keep, and how to let them go
	releases []func()
}

// treeKeeper holds trees against the node's sweeps, and sweeps one now
// (trees.go).
type treeKeeper interface {
	holdTree(ctx context.Context, tree cid.Cid) (release func(), err error)
	sweepTree(ctx context.Context, tree cid.Cid) (int, error)
}

// Upload cuts r into blocks, protects them with Reed-Solomon parity in
// Codex's stepped layout when ecM > 0, stores blocks, leaves and the
// manifest, and returns the manifest CID. Memory stays bounded by one block
// (or one codeword) plus 32 bytes of digest per block. The same bytes and
// options always give the same CID. On any error — a read error, a
// cancelled context, a full quota — everything this upload stored is removed
// again, so no half dataset is left behind.
func Upload(ctx context.Context, st store.BlockStore, r io.Reader, opts UploadOptions) (cid.Cid, error) {
	c, _, err := uploadDataset(ctx, &uploader{st: st}, r, opts)
	return c, err
}

// uploadDataset runs the upload u describes and hands back the manifest it
// wrote too.
func uploadDataset(ctx context.Context, u *uploader, r io.Reader, opts UploadOptions) (cid.Cid, *manifest.Manifest, error) {
	if opts.BlockSize == 0 || opts.BlockSize%64 != 0 {
		return cid.Undef, nil, fmt.Errorf("upload: block size %d is not a positive multiple of 64", opts.BlockSize)
	}
	u.blockSize = opts.BlockSize
	staging, err := newStagingTree()
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	if err := u.hold(ctx, staging); err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	u.staging = staging
	c, m, err := u.run(ctx, r, opts)
	u.finish(err != nil)
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	return c, m, nil
}

// newStagingTree is a CID no dataset's tree can have: the hash of random
// bytes, as a tree CID so that it sorts and sweeps as trees do.
func newStagingTree() (cid.Cid, error) {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return cid.Undef, fmt.Errorf("staging tree: %w", err)
	}
	return store.NewBlock(store.CodecRoot, append([]byte("meshfs upload staging "), nonce...)).CID, nil
}

func (u *uploader) hold(ctx context.Context, tree cid.Cid) error {
	if u.keep == nil {
		return nil
	}
	release, err := u.keep.holdTree(ctx, tree)
	if err != nil {
		return err
	}
	u.held, u.releases = append(u.held, tree), append(u.releases, release)
	return nil
}

func (u *uploader) run(ctx context.Context, r io.Reader, opts UploadOptions) (cid.Cid, *manifest.Manifest, error) {
	digests, size, err := u.chunk(ctx, r)
	if err != nil {
		return cid.Undef, nil, err
	}
	tree, err := merkle.New(digests)
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("build tree: %w", err)
	}
	m := &manifest.Manifest{
		TreeCID:     tree.CID(),
		BlockSize:   u.blockSize,
		DatasetSize: size,
		Codec:       store.CodecBlock,
		HCodec:      mh.SHA2_256,
		Version:     manifestVersion,
		Filename:    opts.Filename,
		Mimetype:    opts.Mimetype,
	}
	// An empty file has nothing to protect, and a protected manifest of size
	// 0 is invalid in Codex's format: it is stored unprotected.
	if opts.EcM > 0 && size > 0 {
		layout, err := erasure.NewLayout(opts.EcK, opts.EcM, uint64(len(digests)))
		if err != nil {
			return cid.Undef, nil, err
		}
		protected, err := u.protect(ctx, layout, digests)
		if err != nil {
			return cid.Undef, nil, err
		}
		m.Protected = true
		m.EcK, m.EcM = opts.EcK, opts.EcM
		m.Strategy = manifest.Stepped
		m.OriginalTreeCID = m.TreeCID
		m.OriginalDatasetSize = size
		m.DatasetSize = layout.Total() * u.blockSize
		digests = protected
		if tree, err = merkle.New(digests); err != nil {
			return cid.Undef, nil, fmt.Errorf("build protected tree: %w", err)
		}
		m.TreeCID = tree.CID()
	}
	// Held from before its first leaf until the manifest names it, so
	// that no sweep takes leaves this upload counts on, be they its own or
	// those of a dataset of the same bytes removed meanwhile.
	if err := u.hold(ctx, tree.CID()); err != nil {
		return cid.Undef, nil, err
	}
	if err := u.putLeaves(ctx, tree, digests); err != nil {
		return cid.Undef, nil, err
	}
	mb, err := m.Block()
	if err != nil {
		return cid.Undef, nil, err
	}
	// The manifest goes last: a dataset is listed once its manifest is held,
	// so a crash before this point leaves no dataset, only trees no
	// dataset names, which the node sweeps.
	commit := u.commit
	if commit == nil {
		commit = func(ctx context.Context, mb store.Block, _ *manifest.Manifest) error { return u.st.Put(ctx, mb) }
	}
	if err := commit(ctx, mb, m); err != nil {
		return cid.Undef, nil, fmt.Errorf("store manifest: %w", err)
	}
	return mb.CID, m, nil
}

// chunk reads r block by block, stores each block and returns the digests
// of all blocks and the byte count. The last block is zero-padded (Codex's
// rule). An empty input gives one all-zero block so that the dataset still
// has a tree; its size of 0 tells readers there is nothing in it.
func (u *uploader) chunk(ctx context.Context, r io.Reader) ([]merkle.Digest, uint64, error) {
	var (
		digests []merkle.Digest
		size    uint64
	)
	r = sourceReader{r}
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		// A fresh buffer per block: the store may keep the slice it is given.
		buf := make([]byte, u.blockSize)
		n, err := io.ReadFull(r, buf)
		if n == 0 && len(digests) > 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			break
		}
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, 0, fmt.Errorf("read input after %d bytes: %w", size, err)
		}
		size += uint64(n)
		b := store.NewBlock(store.CodecBlock, buf)
		if err := u.put(ctx, b); err != nil {
			return nil, 0, fmt.Errorf("store block %d: %w", len(digests), err)
		}
		d, err2 := store.Digest(b.CID)
		if err2 != nil {
			return nil, 0, err2
		}
		digests = append(digests, d)
		if err != nil { // short read: that was the last block
			break
		}
	}
	return digests, size, nil
}

// sourceReader keeps the input's own errors apart from io.ReadFull's: an
// HTTP body cut short reports io.ErrUnexpectedEOF, which ReadFull also uses
// for a normal short last block. Taken at face value, a truncated upload
// would be stored as a complete (shorter) file.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.ErrUnexpectedEOF {
		err = fmt.Errorf("input ended before its declared length: %w", err)
	}
	return n, err
}

// protect computes the parity of every codeword and returns the leaf digests
// of the protected dataset: data, then padding, then parity rows.
func (u *uploader) protect(ctx context.Context, layout erasure.Layout, data []merkle.Digest) ([]merkle.Digest, error) {
	coder, err := erasure.NewCoder(layout.K, layout.M)
	if err != nil {
		return nil, err
	}
	out := make([]merkle.Digest, layout.Total())
	copy(out, data)
	for i := layout.N; i < layout.Rounded(); i++ {
		out[i] = erasure.PaddingDigest
	}
	zero := make([]byte, u.blockSize)
	shards := make([][]byte, layout.K+layout.M)
	for col := uint64(0); col < layout.Steps(); col++ {
		idx := layout.Indices(col)
		for row := 0; row < layout.K; row++ {
			i := idx[row]
			if layout.IsPadding(i) {
				shards[row] = zero
				continue
			}
			b, err := u.st.Get(ctx, store.CIDFromDigest(store.CodecBlock, data[i]))
			if err != nil {
				return nil, fmt.Errorf("read block %d back for parity: %w", i, err)
			}
			shards[row] = b.Data
		}
		for j := layout.K; j < len(shards); j++ {
			shards[j] = make([]byte, u.blockSize)
		}
		if err := coder.Encode(shards); err != nil {
			return nil, fmt.Errorf("encode codeword %d: %w", col, err)
		}
		for j := layout.K; j < len(shards); j++ {
			b := store.NewBlock(store.CodecBlock, shards[j])
			if err := u.put(ctx, b); err != nil {
				return nil, fmt.Errorf("store parity of codeword %d: %w", col, err)
			}
			if out[idx[j]], err = store.Digest(b.CID); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// putLeaves records every stored leaf with its proof; padding leaves are
// synthesised by readers and never stored.
func (u *uploader) putLeaves(ctx context.Context, tree *merkle.Tree, digests []merkle.Digest) error {
	treeCID := tree.CID()
	for i, d := range digests {
		if d == erasure.PaddingDigest {
			continue
		}
		p, err := tree.Proof(i)
		if err != nil {
			return fmt.Errorf("proof of leaf %d: %w", i, err)
		}
		leaf := store.Leaf{Tree: treeCID, Index: uint64(i), Block: store.CIDFromDigest(store.CodecBlock, d), Proof: p.Marshal()}
		// Written even when held: the leaf it rewrites is the same. In a
		// bare store, a leaf held before belongs to an earlier dataset of
		// the same bytes and must survive our rollback.
		if u.keep == nil {
			had, err := u.st.HasLeaf(ctx, treeCID, leaf.Index)
			if err != nil {
				return err
			}
			if had {
				continue
			}
			u.leaves = append(u.leaves, leaf)
		}
		if err := u.st.PutLeaf(ctx, leaf); err != nil {
			return fmt.Errorf("store leaf %d: %w", i, err)
		}
	}
	return nil
}

// put stores b as the next leaf of the staging tree: a reference of this
// upload's own, whether or not the block was held before.
func (u *uploader) put(ctx context.Context, b store.Block) error {
	leaf := store.Leaf{Tree: u.staging, Index: u.staged, Block: b.CID}
	if err := u.st.PutLeafBlock(ctx, leaf, b); err != nil {
		return err
	}
	u.staged++
	return nil
}

// finish drops the staging tree, and after a failure what else the upload
// added, then lets go of the trees it held; after a failure it sweeps the
// real tree too, which keeps it if a dataset names it or another upload
// of the same bytes holds it. It runs on its own context because the
// upload's may be the reason for the failure.
func (u *uploader) finish(failed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if failed {
		for _, l := range u.leaves {
			errs = append(errs, u.st.DeleteLeaf(ctx, l.Tree, l.Index))
		}
	}
	if u.staging.Defined() {
		_, err := u.st.DeleteTree(ctx, u.staging)
		errs = append(errs, err)
	}
	for _, release := range slices.Backward(u.releases) {
		release()
	}
	if failed && u.keep != nil {
		for _, tree := range u.held {
			if !tree.Equals(u.staging) {
				_, err := u.keep.sweepTree(ctx, tree)
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Leftovers are leaves of trees no dataset names: harmless for
		// correctness and swept by the node, so the upload's own
		// outcome wins.
		cmp.Or(u.log, slog.Default()).Warn("upload: dropping its staging leaves incomplete", "failed", failed, "err", err)
	}
}
