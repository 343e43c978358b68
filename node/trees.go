package node

// Which leaves the node keeps.
//
// A tree's leaves (and through their references, its blocks) are kept
// while a held dataset names the tree, which its record says
// (store.RetentionStore.TreeNamed), or while work in this process holds
// it: an upload writing it, a reader or a background fetch storing blocks
// in it. Two manifests of the same bytes name one tree, so removing either
// leaves the tree to the other. Every other tree is garbage: that of a
// removed dataset no other names, an upload's staging tree, whatever a
// crash left half written. It is reclaimed when its last holder lets go
// (sweepTree), and every tree is looked at when the node starts and at
// each collection (sweepTrees), which is what frees what a crash left.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// treeHolds counts the holds on each tree and marks the trees being swept,
// so that a holder never writes into a tree whose leaves are being deleted.
// A sweep turned away by a hold is owed: the last holder to let go runs
// it. Otherwise letting go costs nothing, which matters, since every read
// of a dataset holds its tree while it runs.
type treeHolds struct {
	mu       sync.Mutex
	count    map[cid.Cid]int
	sweeping map[cid.Cid]chan struct{}
	owed     map[cid.Cid]bool
}

func (h *treeHolds) init() {
	h.count = map[cid.Cid]int{}
	h.sweeping = map[cid.Cid]chan struct{}{}
	h.owed = map[cid.Cid]bool{}
}

// acquire holds tree, waiting first while it is being swept.
func (h *treeHolds) acquire(ctx context.Context, tree cid.Cid) error {
	for {
		h.mu.Lock()
		ch, busy := h.sweeping[tree]
		if !busy {
			h.count[tree]++
			h.mu.Unlock()
			return nil
		}
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// add holds tree once more for a caller that holds it already, so that it
// cannot be being swept.
func (h *treeHolds) add(tree cid.Cid) {
	h.mu.Lock()
	h.count[tree]++
	h.mu.Unlock()
}

// drop ends one hold and reports whether the tree is now to be swept: it
// was the last hold, and a sweep was turned away meanwhile.
func (h *treeHolds) drop(tree cid.Cid) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count[tree]--; h.count[tree] > 0 {
		return false
	}
	delete(h.count, tree)
	owed := h.owed[tree]
	delete(h.owed, tree)
	return owed
}

// claim marks tree as being swept if nobody holds it (else the sweep is
// owed to the last holder); unclaim ends that.
func (h *treeHolds) claim(tree cid.Cid) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count[tree] > 0 {
		h.owed[tree] = true
		return false
	}
	if h.sweeping[tree] != nil {
		return false
	}
	h.sweeping[tree] = make(chan struct{})
	return true
}

func (h *treeHolds) unclaim(tree cid.Cid) {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.sweeping[tree])
	delete(h.sweeping, tree)
}

// holdTree keeps tree's leaves until the returned release, which sweeps
// the tree if that was its last hold, a sweep was turned away meanwhile
// (the dataset was removed while held), and no dataset names it.
func (n *Node) holdTree(ctx context.Context, tree cid.Cid) (release func(), err error) {
	if err := n.trees.acquire(ctx, tree); err != nil {
		return nil, err
	}
	return n.treeReleaser(tree), nil
}

// addTreeHold is holdTree for a caller that holds tree already.
func (n *Node) addTreeHold(tree cid.Cid) (release func()) {
	n.trees.add(tree)
	return n.treeReleaser(tree)
}

func (n *Node) treeReleaser(tree cid.Cid) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			if !n.trees.drop(tree) {
				return
			}
			// Its own context: the holder's may be why it lets go.
			ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
			defer cancel()
			if _, err := n.sweepTree(ctx, tree); err != nil && ctx.Err() == nil {
				n.log.Warn("reclaim the leaves of a tree no dataset names", "tree", store.CIDText(tree), "err", err)
			}
		})
	}
}

// sweepTree deletes the leaves of tree unless a dataset names it or work
// holds it, and reports how many it deleted.
func (n *Node) sweepTree(ctx context.Context, tree cid.Cid) (int, error) {
	if !n.trees.claim(tree) {
		return 0, nil
	}
	defer n.trees.unclaim(tree)
	named, err := n.ret.TreeNamed(ctx, tree)
	if err != nil || named {
		return 0, err
	}
	n.disc.Forget(tree)
	deleted, err := n.store.DeleteTree(ctx, tree)
	if deleted > 0 {
		n.log.Debug("reclaimed the leaves of a tree no dataset names", "tree", store.CIDText(tree), "leaves", deleted)
	}
	return deleted, err
}

// sweepTrees sweeps every tree with leaves held. With blocks, it also
// deletes the blocks no leaf references (other than manifests, which their
// records keep): a block is never written so by this version, since every
// block goes in with its leaf, but repositories written by earlier ones
// kept what an upload had stored before a crash that way.
func (n *Node) sweepTrees(ctx context.Context, blocks bool) error {
	var errs []error
	if err := n.store.ForEachTree(ctx, func(tree cid.Cid) error {
		if _, err := n.sweepTree(ctx, tree); err != nil {
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
		if err := n.store.ForEach(ctx, store.CodecBlock, func(c cid.Cid) error {
			return n.store.Delete(ctx, c)
		}); err != nil {
			errs = append(errs, fmt.Errorf("unreferenced blocks: %w", err))
		}
	}
	return errors.Join(errs...)
}

// reconcile runs once, when the node starts and before anything else uses
// the store: it gives every held manifest a record naming its tree (a
// manifest without one is from before records existed, and counts as
// pinned; a record without a tree is from before trees were recorded),
// drops records whose manifest is gone (left by earlier versions, which
// wrote the two apart), and then reclaims every tree and block that no
// dataset needs.
func (n *Node) reconcile(ctx context.Context) error {
	before, err := n.store.Usage(ctx)
	if err != nil {
		return err
	}
	records := map[cid.Cid]store.Retention{}
	if err := n.ret.ForEachRetention(ctx, func(c cid.Cid, r store.Retention) error {
		records[c] = r
		return nil
	}); err != nil {
		return err
	}
	var manifests []cid.Cid
	if err := n.store.ForEach(ctx, store.CodecManifest, func(c cid.Cid) error {
		manifests = append(manifests, c)
		return nil
	}); err != nil {
		return err
	}
	for _, c := range manifests {
		r, recorded := records[c]
		delete(records, c)
		b, err := n.store.Get(ctx, c)
		if err != nil {
			return err
		}
		m, err := manifest.FromBlock(b)
		if err != nil {
			// Kept, as List keeps it out of sight: it may be repaired.
			n.log.Warn("unreadable manifest in store", "cid", store.CIDText(c), "err", err)
			continue
		}
		if recorded && r.Tree.Equals(m.TreeCID) {
			continue
		}
		if !recorded {
			r.Pinned = true
		}
		r.Tree = m.TreeCID
		if err := n.ret.PutRetention(ctx, c, r); err != nil {
			return err
		}
	}
	for c := range records {
		if err := n.ret.DeleteRetention(ctx, c); err != nil {
			return err
		}
	}
	if err := n.sweepTrees(ctx, true); err != nil {
		return err
	}
	if after, err := n.store.Usage(ctx); err == nil && after.UsedBytes < before.UsedBytes {
		n.log.Info("reclaimed what no dataset needs (an interrupted upload or fetch, a removal cut short)",
			"bytes", before.UsedBytes-after.UsedBytes, "blocks", before.Blocks-after.Blocks)
	}
	return nil
}
