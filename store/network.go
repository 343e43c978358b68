package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Fetcher gets blocks this node does not hold from elsewhere (the block
// exchange). What it returns has been verified against the CID or tree
// root asked for. A dataset block (GetLeaf) is already kept in the local
// store with its leaf; a block fetched by CID alone (a manifest) is not,
// since a manifest makes a dataset, which its caller stores with its
// record or not at all.
type Fetcher interface {
	Get(ctx context.Context, c cid.Cid) (Block, error)
	GetLeaf(ctx context.Context, tree cid.Cid, index uint64, prio Priority) (Leaf, Block, error)
}

// Priority says who waits on a fetch from the network.
type Priority uint8

const (
	// Read: a reader waits on it.
	Read Priority = iota
	// Background: nobody waits on it yet (read-ahead, copying a whole
	// dataset to pin it). The block exchange serves such fetches after
	// those of reads, so that the block a reader asked for does not queue
	// behind the window its read started.
	Background
)

// NetworkStore is the seed's NetworkStore: reads go to the local store
// first and to the network when the block is not held; everything else
// (writes, Has, listing, usage) is the local store's.
type NetworkStore struct {
	BlockStore
	fetch Fetcher
}

// NewNetworkStore layers f over local.
func NewNetworkStore(local BlockStore, f Fetcher) *NetworkStore {
	return &NetworkStore{BlockStore: local, fetch: f}
}

// Local is the store underneath.
func (n *NetworkStore) Local() BlockStore { return n.BlockStore }

// Get implements BlockStore.
func (n *NetworkStore) Get(ctx context.Context, c cid.Cid) (Block, error) {
	b, err := n.BlockStore.Get(ctx, c)
	if !errors.Is(err, ErrNotFound) {
		return b, err
	}
	b, err = n.fetch.Get(ctx, c)
	if err != nil {
		return Block{}, fmt.Errorf("network: %w", err)
	}
	return b, nil
}

// GetLeaf implements BlockStore: a fetch a reader waits on.
func (n *NetworkStore) GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (Leaf, Block, error) {
	return n.FetchLeaf(ctx, tree, index, Read)
}

// FetchLeaf is GetLeaf at priority prio.
func (n *NetworkStore) FetchLeaf(ctx context.Context, tree cid.Cid, index uint64, prio Priority) (Leaf, Block, error) {
	l, b, err := n.BlockStore.GetLeaf(ctx, tree, index)
	if !errors.Is(err, ErrNotFound) {
		return l, b, err
	}
	l, b, err = n.fetch.GetLeaf(ctx, tree, index, prio)
	if err != nil {
		return Leaf{}, Block{}, fmt.Errorf("network: %w", err)
	}
	return l, b, nil
}
