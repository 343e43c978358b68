package store_test

import (
	"context"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/storetest"
)

// nowhere is a network that has nothing: the network store must then behave
// exactly as the store it layers over.
type nowhere struct{}

func (nowhere) Get(context.Context, cid.Cid) (store.Block, error) {
	return store.Block{}, store.ErrNotFound
}
func (nowhere) GetLeaf(context.Context, cid.Cid, uint64, store.Priority) (store.Leaf, store.Block, error) {
	return store.Leaf{}, store.Block{}, store.ErrNotFound
}

func TestNetworkStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, quota uint64) store.BlockStore {
		return store.NewNetworkStore(store.NewMemory(quota), nowhere{})
	})
}
