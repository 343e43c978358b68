// Package offer decides what a node tells the network it provides, and
// when: the datasets it holds at start, those it uploads or fetches whole,
// and those a reader happened to read whole from its peers.
//
// Codex announces datasets, never single blocks: a dataset is offered by
// its manifest CID and its tree CID, and only once every data block is
// held, so that a reader that finds this node here is not sent away with
// a DontHave for part of it.
package offer

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
)

// Announcer is what offers need of discovery.
type Announcer interface {
	// Announce provides cids, remembering failures to retry them.
	Announce(ctx context.Context, cids ...cid.Cid) error
	// Schedule has cids provided in the background, failures retried,
	// and returns at once.
	Schedule(cids ...cid.Cid)
	// Announces reports whether c is provided already.
	Announces(c cid.Cid) bool
	// Forget stops providing cids.
	Forget(cids ...cid.Cid)
}

// Holder is the part of a store offers look through.
type Holder interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	HasLeaf(ctx context.Context, tree cid.Cid, index uint64) (bool, error)
}

// Config is what Offers work with; all but Logger are required.
type Config struct {
	Discovery Announcer
	Store     Holder
	// Life bounds every announcement; offers stop when it ends.
	Life   context.Context
	Logger *slog.Logger
}

// Offers announces a node's datasets.
type Offers struct {
	cfg Config
	mu  sync.Mutex // orders IfWhole's bg.Add before Close's bg.Wait
	out bool       // closed: IfWhole starts nothing more
	bg  sync.WaitGroup
}

// New returns Offers over cfg.
func New(cfg Config) *Offers {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Offers{cfg: cfg}
}

// Announce provides datasets now: each one's manifest CID and tree CID.
// Failures are retried by discovery; they are logged, not returned, as
// nothing the caller does waits on the network finding this node.
func (o *Offers) Announce(cids ...cid.Cid) {
	if len(cids) == 0 {
		return
	}
	if err := o.cfg.Discovery.Announce(o.cfg.Life, cids...); err != nil && o.cfg.Life.Err() == nil {
		o.cfg.Logger.Debug("announce: not yet provided, will retry", "cids", len(cids), "err", err)
	}
}

// Soon has datasets provided in the background (each one's manifest CID
// and tree CID), failures retried, and returns at once: for an upload,
// which is whole and safe once committed, and whose caller must not wait
// on the DHT, where a provide takes round trips to peers that may be slow
// or gone. A reader that looks the dataset up in the DHT within those
// round trips may not find it yet; one connected to this node asks it
// directly.
func (o *Offers) Soon(cids ...cid.Cid) {
	if len(cids) == 0 || o.cfg.Life.Err() != nil {
		return
	}
	o.cfg.Discovery.Schedule(cids...)
}

// IfWhole announces dataset c, read from the network, if every data block
// of it is held here now: the next reader finds this node among the
// providers and takes blocks from it too, so that a crowd reading one
// dataset is served by more than the first provider's uplink. It returns
// at once; the look and the announcement run in the background, once per
// dataset (one announced already is not looked at again).
func (o *Offers) IfWhole(c cid.Cid, m *manifest.Manifest) {
	life := o.cfg.Life
	if life.Err() != nil || o.cfg.Discovery.Announces(m.TreeCID) {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.out {
		return
	}
	o.bg.Add(1)
	go func() {
		defer o.bg.Done()
		ctx, cancel := context.WithTimeout(life, time.Minute)
		defer cancel()
		// Not held against collection while it is looked at: a hold would
		// make a full store fail the write that wanted room, for a look
		// that can simply be wrong. A dataset collected during the look is
		// missing blocks (not announced) or its manifest (forgotten below).
		if Whole(ctx, o.cfg.Store, c, m) != nil {
			return // partly read: not a provider of it
		}
		o.Announce(c, m.TreeCID)
		// A collection may have removed it meanwhile, and forgotten the
		// announcement before it was made. Then it is forgotten here.
		if held, err := o.cfg.Store.Has(ctx, c); err == nil && !held {
			o.cfg.Discovery.Forget(c, m.TreeCID)
			return
		}
		o.cfg.Logger.Info("serving a dataset read whole from the network", "cid", store.CIDText(c))
	}()
}

// Wait returns once no offer started by IfWhole is running.
func (o *Offers) Wait() { o.bg.Wait() }

// Close starts no more offers and waits for those running, which end
// soon once Config.Life has.
func (o *Offers) Close() {
	o.mu.Lock()
	o.out = true
	o.mu.Unlock()
	o.bg.Wait()
}

// Whole reports, as an error naming the first block missing, whether st
// holds the manifest of dataset c and every one of its data blocks
// (padding apart: it is never stored). Parity is not asked for: a dataset
// whose data is all here can be read, and served, without it.
func Whole(ctx context.Context, st Holder, c cid.Cid, m *manifest.Manifest) error {
	if has, err := st.Has(ctx, c); err != nil || !has {
		return fmt.Errorf("manifest of %s: held %v: %w", store.CIDText(c), has, cmp.Or(err, store.ErrNotFound))
	}
	var layout erasure.Layout
	if m.Protected {
		var err error
		if layout, err = erasure.NewLayout(m.EcK, m.EcM, m.DataBlocks()); err != nil {
			return fmt.Errorf("%s: %w", store.CIDText(c), err)
		}
	}
	for i := range m.DataBlocks() {
		if m.Protected && layout.IsPadding(i) {
			continue
		}
		if has, err := st.HasLeaf(ctx, m.TreeCID, i); err != nil || !has {
			return fmt.Errorf("block %d of %s: %w", i, store.CIDText(c), cmp.Or(err, store.ErrNotFound))
		}
	}
	return nil
}
