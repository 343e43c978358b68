package node

import (
	"context"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// offerIfWhole announces a dataset this node has read whole from the
// network, as it does one it fetched to pin: the next reader finds this
// node among the providers and takes blocks from it too, so that a crowd
// reading one dataset is served by more than the first provider's uplink.
// It runs when a reader lets go of the dataset, once per dataset (what is
// announced already is not checked again); a dataset collected later is
// forgotten by discovery when it is removed.
func (n *Node) offerIfWhole(c cid.Cid, m *manifest.Manifest) {
	if n.disc == nil || n.ctx.Err() != nil || n.disc.Announces(m.TreeCID) {
		return
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
		defer cancel()
		if !n.whole(ctx, c, m) {
			return // partly read: not a provider of it
		}
		n.announce(c, m.TreeCID)
		// Not held while announcing, which may take a while: a collection
		// may have removed it meanwhile, and forgotten the announcement
		// before it was made. Then it is forgotten here.
		if held, err := n.store.Has(ctx, c); err == nil && !held {
			n.disc.Forget(c, m.TreeCID)
			return
		}
		n.log.Info("serving a dataset read whole from the network", "cid", store.CIDText(c))
	}()
}

// whole reports whether every data block of dataset c is held here,
// holding the dataset while it looks so that no collection removes it
// half-way.
func (n *Node) whole(ctx context.Context, c cid.Cid, m *manifest.Manifest) bool {
	release, err := n.keep.Use(ctx, c)
	if err != nil {
		return false
	}
	defer release()
	return n.checkComplete(ctx, c, m, m.DataBlocks()) == nil
}
