package node

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/node/dirtree"
	"github.com/meshfs/meshfs/node/dirupload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
	"github.com/meshfs/meshfs/store/manifest"
)

// TreeStats count what an uploaded tree held.
type TreeStats = dirupload.Stats

// UploadTree stores the tree a tar stream holds as directory datasets
// (see dirupload.FromTar), each file and directory pinned as an upload
// is, and returns the root directory's manifest CID.
func (n *Node) UploadTree(ctx context.Context, r io.Reader) (cid.Cid, TreeStats, error) {
	c, st, err := dirupload.FromTar(ctx, treeUploader{n}, r)
	if err != nil {
		return cid.Undef, st, err
	}
	n.log.Info("uploaded a directory", "cid", store.CIDText(c), "files", st.Files, "dirs", st.Dirs,
		"symlinks", st.Symlinks, "bytes", st.Bytes)
	return c, st, nil
}

// treeUploader uploads a tree's datasets without a log line each.
type treeUploader struct{ n *Node }

func (u treeUploader) Upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error) {
	c, m, err := u.n.up.UploadWith(ctx, r, UploadParams{Filename: filename, Mimetype: mimetype})
	if err != nil {
		return cid.Undef, err
	}
	u.n.offers.Soon(c, m.TreeCID)
	return c, nil
}

// OpenDir opens directory c, wherever on the network it is.
func (n *Node) OpenDir(ctx context.Context, c cid.Cid) (*dirtree.Dir, error) {
	return dirtree.OpenDir(ctx, treeOpener{n}, c)
}

// Resolve finds the entry at path segs (see dirtree.SplitPath) under
// directory root.
func (n *Node) Resolve(ctx context.Context, root cid.Cid, segs []string) (dirlist.Entry, error) {
	return dirtree.Resolve(ctx, treeOpener{n}, root, segs)
}

type treeOpener struct{ n *Node }

func (o treeOpener) OpenDataset(ctx context.Context, c cid.Cid) (dirtree.Dataset, error) {
	d, err := o.n.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	return treeDataset{d}, nil
}

type treeDataset struct{ *Dataset }

func (d treeDataset) Mimetype() string { return d.Manifest.Mimetype }

// checkListing refuses a directory whose listing's index is malformed
// before its manifest is recorded, and when it came from the network
// sweeps what reading it fetched: a hostile peer's listing leaves nothing
// behind. Pages are checked as they are read (dirlist), not all here,
// so that opening a large directory reads a bounded part of it.
func (n *Node) checkListing(ctx context.Context, c cid.Cid, m *manifest.Manifest, cfg dataset.Config, arrived bool) error {
	if m.Mimetype != dirlist.Mimetype {
		return nil
	}
	releaseTree, err := n.keep.HoldTree(ctx, m.TreeCID)
	if err != nil {
		return err
	}
	// A reader of its own, without the open's holds: their reads would
	// record (and restore) the dataset.
	cfg.Hold, cfg.Release = nil, nil
	// Nor fetches ahead: one still running after the sweep below would
	// store a block of the refused listing again.
	cfg.Prefetch = 0
	d, err := dataset.New(c, m, cfg)
	if err == nil {
		_, err = dirlist.Open(ctx, d, d.Size())
		d.Close()
	}
	releaseTree()
	if err == nil {
		return nil
	}
	if arrived && errors.Is(err, dirlist.ErrMalformed) {
		n.log.Warn("refused a malformed directory listing from the network", "cid", store.CIDText(c), "err", err)
		if _, serr := n.sweepTree(context.WithoutCancel(ctx), m.TreeCID); serr != nil {
			n.log.Warn("sweeping a refused listing", "cid", store.CIDText(c), "err", serr)
		}
	}
	return fmt.Errorf("open %s: %w", store.CIDText(c), err)
}
