package exchange

import (
	"testing"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/storetest"
)

// netStore is a network store over a memory store of quota bytes, whose
// engine on a real host fetches from another node on loopback (remote).
func netStore(t *testing.T, quota uint64) (net, local store.BlockStore, remote *node) {
	remote = newNode(t, nil, Options{}, nil)
	local = store.NewMemory(quota)
	reader := newNode(t, staticDisc{addrInfo(remote.h)}, Options{}, func(store.BlockStore) store.BlockStore { return local })
	return store.NewNetworkStore(local, reader.e), local, remote
}

// The network store keeps the store contract with a real exchange behind
// it, another node on the line: what the other node does not hold is
// looked for there and not found, and the rest is the local store's.
func TestNetworkStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, quota uint64) store.BlockStore {
		net, _, _ := netStore(t, quota)
		return net
	})
}

// And its own part: blocks only the other node holds are fetched,
// verified and kept.
func TestNetworkStoreFetches(t *testing.T) {
	storetest.RunNetwork(t, func(t *testing.T) storetest.Network {
		net, local, remote := netStore(t, 0)
		return storetest.Network{Store: net, Local: local, Remote: remote.st}
	})
}
