package exchange

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// holdingStore holds back the first block write or leaf read until its
// context ends, and then until release: a store call in progress when the
// engine closes.
type holdingStore struct {
	store.BlockStore
	writes                      bool // hold PutLeafBlock, else GetLeaf
	once                        sync.Once
	entered, cancelled, release chan struct{}
}

func newHoldingStore(writes bool) *holdingStore {
	return &holdingStore{writes: writes, entered: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
}

// hold reports whether this call is the one held, and if so holds it.
func (h *holdingStore) hold(ctx context.Context) bool {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.entered)
		<-ctx.Done()
		close(h.cancelled)
		<-h.release
	}
	return first
}

func (h *holdingStore) PutLeafBlock(ctx context.Context, l store.Leaf, b store.Block) error {
	if h.writes && h.hold(ctx) {
		return ctx.Err()
	}
	return h.BlockStore.PutLeafBlock(ctx, l, b)
}

func (h *holdingStore) GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (store.Leaf, store.Block, error) {
	if !h.writes && h.hold(ctx) {
		return store.Leaf{}, store.Block{}, ctx.Err()
	}
	return h.BlockStore.GetLeaf(ctx, tree, index)
}

// closesAfterHold closes e once st holds a call, and fails the test if
// Close returns before that call does: after Close the node closes its
// store, which nothing of the engine may still be using.
func closesAfterHold(t *testing.T, e *Engine, st *holdingStore) {
	t.Helper()
	select {
	case <-st.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the store was never called")
	}
	closed := make(chan struct{})
	go func() {
		e.Close()
		close(closed)
	}()
	<-st.cancelled // Close has begun: it cancelled the call's context
	select {
	case <-closed:
		t.Fatal("Close returned while a store call was still running")
	default:
	}
	close(st.release)
	<-closed
}

func TestCloseWaitsForBlocksBeingStored(t *testing.T) {
	d := newDataset(t, 4, 8192)
	provider := newNode(t, nil, Options{}, nil)
	d.put(t, provider.st)
	held := newHoldingStore(true)
	fetcher := newNode(t, staticDisc{addrInfo(provider.h)}, Options{}, func(st store.BlockStore) store.BlockStore {
		held.BlockStore = st
		return held
	})
	go fetcher.e.GetLeaf(context.Background(), d.root, 0, store.Read) // fails once the engine closes
	closesAfterHold(t, fetcher.e, held)
}

func TestCloseWaitsForBlocksBeingServed(t *testing.T) {
	d := newDataset(t, 4, 8192)
	held := newHoldingStore(false)
	provider := newNode(t, nil, Options{}, func(st store.BlockStore) store.BlockStore {
		held.BlockStore = st
		return held
	})
	d.put(t, provider.st)
	fetcher := newNode(t, staticDisc{addrInfo(provider.h)}, Options{}, nil)
	go fetcher.e.GetLeaf(context.Background(), d.root, 0, store.Read) // fails once the engines close
	closesAfterHold(t, provider.e, held)
}
