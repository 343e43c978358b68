// Package upload turns a byte stream into a dataset in Codex's format: the
// stream cut into fixed-size blocks, protected with Reed-Solomon parity in
// the stepped layout, a Merkle tree over the blocks with a proof per leaf,
// and a manifest block naming the tree. The same bytes and settings give
// the same CIDs as on a Codex node.
//
// An Uploader is configured once, with the store it writes to and, when
// it writes into a store that something else collects garbage in, hooks
// to hold trees against that collection and to store the manifest with
// whatever record makes it a dataset. Upload does the same into a bare
// store, for tools and tests.
package upload

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

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
)

// Config is what every upload of an Uploader shares.
type Config struct {
	Store store.BlockStore
	// BlockSize forces every upload's block size: a multiple of 64 up to
	// manifest.MaxBlockSize. 0 chooses it per upload (BlockSizeFor).
	BlockSize uint64
	// EcK data and EcM parity blocks per codeword; EcM 0 (or less) stores
	// datasets unprotected.
	EcK, EcM int
	// HoldTree and SweepTree, both or neither, are how the store's owner
	// keeps an upload's trees from its garbage collection: HoldTree keeps
	// tree's leaves until release, SweepTree deletes them now unless a
	// dataset names the tree or someone else holds it. Without them the
	// store is taken as bare, nobody else sweeping it, and a failed
	// upload deletes the leaves it added itself.
	HoldTree  func(ctx context.Context, tree cid.Cid) (release func(), err error)
	SweepTree func(ctx context.Context, tree cid.Cid) (int, error)
	// Commit stores the manifest, the step that makes the upload a
	// dataset; nil: Store.Put.
	Commit func(ctx context.Context, mb store.Block, m *manifest.Manifest) error
	Logger *slog.Logger // nil: slog.Default()
}

// Uploader stores datasets as its Config says; safe for concurrent use.
type Uploader struct{ cfg Config }

// New checks cfg and makes an Uploader of it.
func New(cfg Config) (*Uploader, error) {
	if cfg.Store == nil {
		return nil, errors.New("upload: no store")
	}
	if err := checkBlockSize(cfg.BlockSize); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	if cfg.EcM > 0 {
		if _, err := erasure.NewCoder(cfg.EcK, cfg.EcM); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
	}
	if (cfg.HoldTree == nil) != (cfg.SweepTree == nil) {
		return nil, errors.New("upload: HoldTree and SweepTree go together")
	}
	if cfg.Commit == nil {
		st := cfg.Store
		cfg.Commit = func(ctx context.Context, mb store.Block, _ *manifest.Manifest) error { return st.Put(ctx, mb) }
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Uploader{cfg: cfg}, nil
}

// Options describe one upload into a bare store.
type Options struct {
	Filename string
	Mimetype string
	// BlockSize forces the block size; 0 chooses it (BlockSizeFor).
	BlockSize uint64
	EcK, EcM  int
}

// Upload stores r into the bare store st as Uploader.Upload does, with
// opts' settings, and returns the manifest CID.
func Upload(ctx context.Context, st store.BlockStore, r io.Reader, opts Options) (cid.Cid, error) {
	u, err := New(Config{Store: st, BlockSize: opts.BlockSize, EcK: opts.EcK, EcM: opts.EcM})
	if err != nil {
		return cid.Undef, err
	}
	c, _, err := u.Upload(ctx, r, opts.Filename, opts.Mimetype)
	return c, err
}

// Params are one upload's own settings.
type Params struct {
	Filename, Mimetype string
	// BlockSize forces this upload's block size over the Uploader's; 0:
	// the Uploader's, or the one BlockSizeFor chooses.
	BlockSize uint64
}

// Upload is UploadWith with a file name and media type only.
func (u *Uploader) Upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, *manifest.Manifest, error) {
	return u.UploadWith(ctx, r, Params{Filename: filename, Mimetype: mimetype})
}

// UploadWith cuts r into blocks, protects them with Reed-Solomon parity in
// Codex's stepped layout when EcM > 0, stores blocks, leaves and the
// manifest, and returns the manifest and its CID. Memory stays bounded by
// a few blocks per core plus 32 bytes of digest per block. The same
// bytes and settings always give the same CID. On any error — a read
// error, a cancelled context, a full quota — everything this upload
// stored is removed again, so no half dataset is left behind.
func (u *Uploader) UploadWith(ctx context.Context, r io.Reader, p Params) (cid.Cid, *manifest.Manifest, error) {
	if err := checkBlockSize(p.BlockSize); err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	staging, err := newStagingTree()
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	j := &job{Config: &u.cfg, forced: cmp.Or(p.BlockSize, u.cfg.BlockSize)}
	if err := j.hold(ctx, staging); err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	j.staging = staging
	c, m, err := j.run(ctx, r, p.Filename, p.Mimetype)
	j.finish(err != nil)
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("upload: %w", err)
	}
	return c, m, nil
}

// job carries the state of one upload so that a failure at any step can
// undo exactly what this upload added and nothing else.
//
// Every block goes into the store as a leaf of a staging tree of the
// upload's own (a random CID no dataset names), so that from the moment it
// is stored it is referenced: by this upload, whatever other uploads or
// datasets hold the same block. The real tree's leaves follow once all
// blocks are hashed (each taking its staging leaf's place, where the store
// can move leaves), then the manifest, and what is left of the staging
// tree goes last. A failed upload drops its staging tree, which frees just
// the blocks nobody else references; a crash leaves it for the store's
// owner to sweep.
type job struct {
	*Config
	// forced is the block size the upload must have, 0 if none; bs the
	// one it has, settled before its first block (chooseBlockSize). The
	// Config's BlockSize is neither: use these.
	forced, bs uint64
	// staging is the tree each block is put in at its index in the
	// dataset (parity at its index in the protected one) when it is
	// stored; the parity pass reads data blocks back from it.
	staging cid.Cid
	w       *writer // set with bs
	// leaves lists, for an upload into a bare store, the real tree's
	// leaves it added, which its rollback deletes.
	leaves   []store.Leaf
	held     []cid.Cid // trees held through HoldTree, and how to let them go
	releases []func()
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

// bare reports whether nobody but this package looks after the store's
// trees.
func (j *job) bare() bool { return j.HoldTree == nil }

func (j *job) hold(ctx context.Context, tree cid.Cid) error {
	if j.bare() {
		return nil
	}
	release, err := j.HoldTree(ctx, tree)
	if err != nil {
		return err
	}
	j.held, j.releases = append(j.held, tree), append(j.releases, release)
	return nil
}

// finish drops the staging tree, and after a failure what else the upload
// added, then lets go of the trees it held; after a failure it sweeps the
// real tree too, which keeps it if a dataset names it or another upload
// of the same bytes holds it. It runs on its own context because the
// upload's may be the reason for the failure.
func (j *job) finish(failed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if failed {
		for _, l := range j.leaves {
			errs = append(errs, j.Store.DeleteLeaf(ctx, l.Tree, l.Index))
		}
	}
	if j.staging.Defined() {
		_, err := j.Store.DeleteTree(ctx, j.staging)
		errs = append(errs, err)
	}
	for _, release := range slices.Backward(j.releases) {
		release()
	}
	if failed && !j.bare() {
		for _, tree := range j.held {
			if !tree.Equals(j.staging) {
				_, err := j.SweepTree(ctx, tree)
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Leftovers are leaves of trees no dataset names: harmless for
		// correctness and swept by the store's owner, so the upload's own
		// outcome wins.
		j.Logger.Warn("upload: dropping its staging leaves incomplete", "failed", failed, "err", err)
	}
}
