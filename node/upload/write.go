package upload

import (
	"context"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/merkle"
)

// manifestVersion is Codex's enum position for CIDv1 (not the CID version).
const manifestVersion = 2

func (j *job) run(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, *manifest.Manifest, error) {
	var err error
	if j.bs, r, err = chooseBlockSize(sourceReader{r}, j.forced, j.EcK, j.EcM); err != nil {
		return cid.Undef, nil, err
	}
	j.w = newWriter(j.Store, j.bs)
	digests, size, err := j.chunk(ctx, r)
	if err != nil {
		return cid.Undef, nil, err
	}
	tree, err := merkle.New(digests)
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("build tree: %w", err)
	}
	m := &manifest.Manifest{
		TreeCID:     tree.CID(),
		BlockSize:   j.bs,
		DatasetSize: size,
		Codec:       store.CodecBlock,
		HCodec:      mh.SHA2_256,
		Version:     manifestVersion,
		Filename:    filename,
		Mimetype:    mimetype,
	}
	// An empty file has nothing to protect, and a protected manifest of size
	// 0 is invalid in Codex's format: it is stored unprotected.
	if j.EcM > 0 && size > 0 {
		layout, err := erasure.NewLayout(j.EcK, j.EcM, uint64(len(digests)))
		if err != nil {
			return cid.Undef, nil, err
		}
		protected, err := j.protect(ctx, layout, digests)
		if err != nil {
			return cid.Undef, nil, err
		}
		m.Protected = true
		m.EcK, m.EcM = j.EcK, j.EcM
		m.Strategy = manifest.Stepped
		m.OriginalTreeCID = m.TreeCID
		m.OriginalDatasetSize = size
		m.DatasetSize = layout.Total() * j.bs
		digests = protected
		if tree, err = merkle.New(digests); err != nil {
			return cid.Undef, nil, fmt.Errorf("build protected tree: %w", err)
		}
		m.TreeCID = tree.CID()
	}
	// Held from before its first leaf until the manifest names it, so
	// that no sweep takes leaves this upload counts on, be they its own or
	// those of a dataset of the same bytes removed meanwhile.
	if err := j.hold(ctx, tree.CID()); err != nil {
		return cid.Undef, nil, err
	}
	if err := j.putLeaves(ctx, tree, digests); err != nil {
		return cid.Undef, nil, err
	}
	mb, err := m.Block()
	if err != nil {
		return cid.Undef, nil, err
	}
	// The manifest goes last: a dataset is listed once its manifest is held,
	// so a crash before this point leaves no dataset, only trees no
	// dataset names, which the store's owner sweeps.
	if err := j.Commit(ctx, mb, m); err != nil {
		return cid.Undef, nil, fmt.Errorf("store manifest: %w", err)
	}
	return mb.CID, m, nil
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

// putLeaves records every stored leaf with its proof, leafBatch a write;
// padding leaves are synthesised by readers and never stored.
func (j *job) putLeaves(ctx context.Context, tree *merkle.Tree, digests []merkle.Digest) error {
	treeCID := tree.CID()
	batch := make([]store.Leaf, 0, min(len(digests), leafBatch))
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
		if j.bare() {
			had, err := j.Store.HasLeaf(ctx, treeCID, leaf.Index)
			if err != nil {
				return err
			}
			if had {
				continue
			}
			j.leaves = append(j.leaves, leaf)
		}
		if batch = append(batch, leaf); len(batch) == leafBatch {
			if err := j.w.putLeaves(ctx, j.staging, batch); err != nil {
				return fmt.Errorf("store leaves up to %d: %w", i, err)
			}
			batch = batch[:0]
		}
	}
	if err := j.w.putLeaves(ctx, j.staging, batch); err != nil {
		return fmt.Errorf("store leaves: %w", err)
	}
	return nil
}
