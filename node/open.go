package node

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// Dataset is a reader of one dataset, as the node opens it.
type Dataset = dataset.Reader

// Open prepares a reader over dataset c, wherever on the network it is:
// blocks come from the local store, else from peers. A manifest that comes
// from the network is stored, and the dataset held as cached. The dataset
// is not garbage collected until the reader is closed (Dataset.Close).
func (n *Node) Open(ctx context.Context, c cid.Cid) (*Dataset, error) {
	release, err := n.keep.Use(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	held, err := n.store.Has(ctx, c)
	if err != nil {
		release()
		return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	cfg := dataset.Config{
		Store:        n.net,
		Fetcher:      n.net,
		Local:        n.net.Local(),
		Leaves:       n.leaves,
		Cache:        n.blocks,
		BlockTimeout: n.cfg.FetchTimeout,
		HedgeAfter:   hedgeAfter,
		Prefetch:     prefetchBlocks,
		Logger:       n.log,
		Life:         n.ctx,
		Counters:     &n.reads,
	}
	if n.engine != nil {
		cfg.Progress = n.engine
		cfg.FailHint = n.relayHint
	}
	return n.open(ctx, c, release, cfg, true, !held)
}

// OpenLocal opens dataset c from the local store only. It is not garbage
// collected until the reader is closed (Dataset.Close).
func (n *Node) OpenLocal(ctx context.Context, c cid.Cid) (*Dataset, error) {
	release, err := n.keep.Use(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	return n.open(ctx, c, release, dataset.Config{Store: n.store, Leaves: n.leaves}, false, false)
}

// open makes the reader of dataset c, which release holds, and ties it to
// the collector and to its tree (see opened). network says the reader
// fetches missing blocks from peers; arrived, that its manifest came from
// the network just now and is to be stored.
func (n *Node) open(ctx context.Context, c cid.Cid, release func(), cfg dataset.Config, network, arrived bool) (*Dataset, error) {
	mb, m, err := manifest.Read(ctx, cfg.Store, c)
	if err != nil {
		release()
		return nil, err
	}
	o := &opened{n: n, c: c, m: m, mblock: mb, network: network, release: release}
	cfg.Hold, cfg.Release = o.hold, o.close
	if err := n.checkListing(ctx, c, m, cfg, arrived); err != nil {
		release()
		return nil, err
	}
	d, err := dataset.New(c, m, cfg)
	if err != nil {
		release()
		return nil, err
	}
	// Only a dataset that reads is held and recorded: a manifest whose
	// layout does not add up is not stored.
	if err := o.track(ctx, arrived); err != nil {
		return nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	return d, nil
}

// opened is a dataset the node opened for a reader, as the collector sees
// it: every read holds the dataset and its tree again while it runs and
// counts as an access, and closing the reader ends the holds the open took.
type opened struct {
	n *Node
	c cid.Cid
	m *manifest.Manifest
	// mblock is the manifest as read, stored again should the dataset be
	// removed while the reader is open.
	mblock      store.Block
	network     bool
	release     func() // the open's hold on the dataset
	releaseTree func() // and on its tree, set by track before the reader is handed out
}

// track holds the tree until the reader is closed and records the open.
func (o *opened) track(ctx context.Context, arrived bool) error {
	releaseTree, err := o.n.keep.HoldTree(ctx, o.m.TreeCID)
	if err != nil {
		o.release()
		return err
	}
	o.releaseTree = releaseTree
	if arrived {
		o.n.keep.Arrived(ctx, o.mblock, o.m.TreeCID)
		return nil
	}
	o.accessed(ctx)
	return nil
}

// hold is the reader's Config.Hold.
func (o *opened) hold(ctx context.Context) (func(), error) {
	r, err := o.n.keep.Use(ctx, o.c)
	if err != nil {
		return nil, err
	}
	rt, err := o.n.keep.HoldTree(ctx, o.m.TreeCID)
	if err != nil {
		r()
		return nil, err
	}
	o.accessed(ctx)
	return func() { rt(); r() }, nil
}

// close is the reader's Config.Release.
func (o *opened) close() {
	o.releaseTree()
	o.release()
	if o.network {
		o.n.offers.IfWhole(o.c, o.m)
	}
}

// accessed records a read of o. A network reader brings back the
// manifest of a dataset removed while it was open, as a cached dataset
// (see retention.Keeper.Accessed).
func (o *opened) accessed(ctx context.Context) {
	o.n.keep.Accessed(ctx, o.mblock, o.m.TreeCID, o.network)
}

// prefetchBlocks is how far ahead of a sequential reader blocks are
// fetched: 6 MiB of 64 KiB blocks, half again the exchange's window per
// peer, so that the window stays full while a reader is a little behind.
// Measured (bench, 256 MiB): 64 left the window short on a 50 ms link
// (0.80 of it); 128 filled it but, reading across lost blocks, started so
// many decodes at once that each waited behind the others' fetches (0.43
// of the intact read); 96 gave 0.86-0.88 and 0.97.
const prefetchBlocks = 96

// hedgeAfter is how long the peers serving a protected dataset may go
// silent before a read decodes the block it waits on: many round trips
// of the slowest link we serve (300 ms), a small part of FetchTimeout.
const hedgeAfter = 2 * time.Second

// blockCacheBytes is the node's cache of recently fetched blocks, shared by
// all its datasets: read-ahead windows of several sequential readers at
// once, so that what was fetched ahead is still here when it is read.
const blockCacheBytes = 32 << 20
