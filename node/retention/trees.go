package retention

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// SweepTree deletes the leaves of tree unless a dataset names it or work
// holds it, and reports how many it deleted. A hold turns it away, and the
// last holder's release runs it again.
func (k *Keeper) SweepTree(ctx context.Context, tree cid.Cid) (int, error) {
	if !k.trees.claim(tree) {
		return 0, nil
	}
	defer k.trees.unclaim(tree)
	named, err := k.rec.TreeNamed(ctx, tree)
	if err != nil || named {
		return 0, err
	}
	if k.cfg.Unnamed != nil {
		k.cfg.Unnamed(tree)
	}
	deleted, err := k.st.DeleteTree(ctx, tree)
	if deleted > 0 {
		k.log.Debug("reclaimed the leaves of a tree no dataset names", "tree", store.CIDText(tree), "leaves", deleted)
	}
	return deleted, err
}

// sweepTrees sweeps every tree with leaves held. With blocks, it also
// deletes the blocks no leaf references (other than manifests, which their
// records keep): a block is never written so by this version, since every
// block goes in with its leaf, but repositories written by earlier ones
// kept what an upload had stored before a crash that way.
func (k *Keeper) sweepTrees(ctx context.Context, blocks bool) error {
	var errs []error
	if err := k.st.ForEachTree(ctx, func(tree cid.Cid) error {
		if _, err := k.SweepTree(ctx, tree); err != nil {
			if ctx.Err() != nil {
				return err
			}
			errs = append(errs, fmt.Errorf("tree %s: %w", store.CIDText(tree), err))
		}
		return nil
	}); err != nil {
		return err
	}
	if blocks {
		// Delete keeps a block that leaves reference.
		if err := k.st.ForEach(ctx, store.CodecBlock, func(c cid.Cid) error {
			return k.st.Delete(ctx, c)
		}); err != nil {
			errs = append(errs, fmt.Errorf("unreferenced blocks: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Reconcile runs once, when the node starts and before anything else uses
// the store: it gives every held manifest a record naming its tree (a
// manifest without one is from before records existed, and counts as
// pinned; a record without a tree is from before trees were recorded),
// drops records whose manifest is gone (left by earlier versions, which
// wrote the two apart), and then reclaims every tree and block that no
// dataset needs.
func (k *Keeper) Reconcile(ctx context.Context) error {
	before, err := k.st.Usage(ctx)
	if err != nil {
		return err
	}
	records, err := Records(ctx, k.rec)
	if err != nil {
		return err
	}
	var manifests []cid.Cid
	if err := k.st.ForEach(ctx, store.CodecManifest, func(c cid.Cid) error {
		manifests = append(manifests, c)
		return nil
	}); err != nil {
		return err
	}
	for _, c := range manifests {
		r, recorded := records[c]
		delete(records, c)
		b, err := k.st.Get(ctx, c)
		if err != nil {
			return err
		}
		m, err := manifest.FromBlock(b)
		if err != nil {
			// Kept, as a listing keeps it out of sight: it may be repaired.
			k.log.Warn("unreadable manifest in store", "cid", store.CIDText(c), "err", err)
			continue
		}
		if recorded && r.Tree.Equals(m.TreeCID) {
			continue
		}
		if !recorded {
			r.Pinned = true
		}
		r.Tree = m.TreeCID
		if err := k.rec.PutRetention(ctx, c, r); err != nil {
			return err
		}
	}
	for c := range records {
		if err := k.rec.DeleteRetention(ctx, c); err != nil {
			return err
		}
	}
	if err := k.sweepTrees(ctx, true); err != nil {
		return err
	}
	if after, err := k.st.Usage(ctx); err == nil && after.UsedBytes < before.UsedBytes {
		k.log.Info("reclaimed what no dataset needs (an interrupted upload or fetch, a removal cut short)",
			"bytes", before.UsedBytes-after.UsedBytes, "blocks", before.Blocks-after.Blocks)
	}
	return nil
}
