package node

import (
	"context"
	"io"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/retention"
)

// What retention reports, as the API and the CLI know it.
type (
	GCResult  = retention.GCResult
	Collected = retention.Collected
	PinResult = retention.PinResult
)

// newKeeper makes the node's retention: over its local store and records,
// telling discovery and the background fetches of what goes.
func (n *Node) newKeeper() *retention.Keeper {
	return retention.New(retention.Config{
		Store:    n.store,
		Records:  n.ret,
		Clock:    n.cfg.Clock,
		CacheTTL: n.cfg.CacheTTL,
		Logger:   n.log,
		Life:     n.ctx,
		Fetch: func(ctx context.Context, c cid.Cid) (io.Closer, error) {
			d, err := n.Fetch(ctx, c)
			if err != nil {
				return nil, err
			}
			return d, nil
		},
		Removed: func(c cid.Cid) {
			n.disc.Forget(c)
			n.fetch.Forget(c)
		},
		Unnamed: func(tree cid.Cid) { n.disc.Forget(tree) },
	})
}

// Pin keeps dataset c from garbage collection until Unpin. A dataset not
// held completely is fetched in the background, wherever on the network it
// is (progress: FetchStatus); its manifest must be found within ctx.
func (n *Node) Pin(ctx context.Context, c cid.Cid) (PinResult, error) { return n.keep.Pin(ctx, c) }

// Unpin makes dataset c cached, as if it had just been read: the collector
// may remove it once it expires or the store needs the space.
func (n *Node) Unpin(ctx context.Context, c cid.Cid) error { return n.keep.Unpin(ctx, c) }

// GC runs a collection now (see package retention) and, when it freed
// anything, compacts the store so that the disk space is reclaimed too.
func (n *Node) GC(ctx context.Context) (GCResult, error) { return n.keep.GC(ctx) }

// MakeRoom collects as GC does, but counts need more bytes as used, so
// that an upload of that size finds room under the quota if removing
// cached datasets can make it.
func (n *Node) MakeRoom(ctx context.Context, need uint64) (GCResult, error) {
	return n.keep.MakeRoom(ctx, need)
}

// holdTree and sweepTree make the node the uploader's treeKeeper.
func (n *Node) holdTree(ctx context.Context, tree cid.Cid) (func(), error) {
	return n.keep.HoldTree(ctx, tree)
}

func (n *Node) sweepTree(ctx context.Context, tree cid.Cid) (int, error) {
	return n.keep.SweepTree(ctx, tree)
}
