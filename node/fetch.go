package node

import (
	"context"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/fetch"
)

// FetchProgress is the state of a background fetch of a whole dataset.
type FetchProgress = fetch.Progress

// Fetch finds dataset c (its manifest, within ctx) and starts copying every
// block of it into the local store in the background; FetchStatus reports
// progress. Once all of it is held, the node announces itself as a
// provider.
func (n *Node) Fetch(ctx context.Context, c cid.Cid) (*Dataset, error) { return n.fetch.Start(ctx, c) }

// Fetches reports every background fetch started since the node began.
func (n *Node) Fetches() []FetchProgress { return n.fetch.All() }

// FetchStatus reports the background fetch of c, if one was started.
func (n *Node) FetchStatus(c cid.Cid) (FetchProgress, bool) { return n.fetch.Status(c) }

// CancelFetch ends background fetch id of dataset c (FetchProgress.ID),
// keeping what it fetched as a cached dataset; false when no such fetch
// runs.
func (n *Node) CancelFetch(ctx context.Context, c cid.Cid, id uint64) (bool, error) {
	return n.fetch.Cancel(ctx, c, id)
}

// Advertise announces a held dataset to the network now, beside the
// node's own announcements and their renewals.
func (n *Node) Advertise(ctx context.Context, c cid.Cid) error {
	m, err := n.Manifest(ctx, c)
	if err != nil {
		return err
	}
	n.offers.Announce(c, m.TreeCID)
	return nil
}
