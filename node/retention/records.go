package retention

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// putDataset stores manifest b with its record r in one commit (unless
// onlyNew and the dataset has a record already), collecting cached
// datasets to make room when the store is full.
func (k *Keeper) putDataset(ctx context.Context, b store.Block, r store.Retention, onlyNew bool) error {
	put := func() error {
		k.recMu.Lock()
		defer k.recMu.Unlock()
		if onlyNew {
			if _, err := k.rec.GetRetention(ctx, b.CID); !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return k.rec.PutDataset(ctx, b, r)
	}
	// Not under recMu: a collection removes datasets, which takes it.
	err := put()
	if errors.Is(err, store.ErrQuotaExceeded) && k.Reclaim(ctx, uint64(len(b.Data))) {
		err = put()
	}
	return err
}

// updateRecord changes the record of dataset c with change; a dataset
// without one is not held (store.ErrNotFound).
func (k *Keeper) updateRecord(ctx context.Context, c cid.Cid, change func(*store.Retention)) error {
	k.recMu.Lock()
	defer k.recMu.Unlock()
	k.uses.due(c, k.now())
	r, err := k.rec.GetRetention(ctx, c)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("not held locally: %w", err)
	}
	if err != nil {
		return err
	}
	change(&r)
	return k.rec.PutRetention(ctx, c, r)
}

// PutPinned stores an upload's manifest mb, whose tree is tree, with its
// pinned record: the dataset exists from this one commit on, whole (the
// upload holds its tree until then).
func (k *Keeper) PutPinned(ctx context.Context, mb store.Block, tree cid.Cid) error {
	// Waits while the collector removes a cached copy of the very same
	// dataset, which would otherwise delete the manifest just stored.
	release, err := k.Use(ctx, mb.CID)
	if err != nil {
		return err
	}
	defer release()
	return k.putDataset(ctx, mb, store.Retention{Pinned: true, LastAccess: k.now(), Tree: tree}, false)
}

// PinResult says what Pin found.
type PinResult struct {
	// Local: the dataset's manifest was held here when it was pinned.
	Local bool
	// Fetching: a background fetch was started to bring in the blocks
	// not held yet.
	Fetching bool
}

// Pin keeps dataset c from collection until Unpin. A dataset not held
// completely is fetched in the background (Config.Fetch); its manifest
// must be found within ctx.
func (k *Keeper) Pin(ctx context.Context, c cid.Cid) (PinResult, error) {
	release, err := k.Use(ctx, c)
	if err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	defer release()
	local, err := k.st.Has(ctx, c)
	if err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	if local {
		r, err := k.rec.GetRetention(ctx, c)
		if err != nil {
			return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
		}
		if r.Pinned {
			return PinResult{Local: true}, nil // complete, as uploads are
		}
	}
	if k.cfg.Fetch == nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), errors.ErrUnsupported)
	}
	// A cached dataset may hold only the blocks someone read; pinning
	// it means keeping all of it.
	d, err := k.cfg.Fetch(ctx, c)
	if err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	defer d.Close()
	now := k.now()
	if err := k.updateRecord(ctx, c, func(r *store.Retention) { r.Pinned, r.LastAccess = true, now }); err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	k.log.Info("pinned", "cid", store.CIDText(c), "local", local)
	return PinResult{Local: local, Fetching: true}, nil
}

// Unpin makes dataset c cached, as if it had just been read: the collector
// may remove it once it expires or the store needs the space.
func (k *Keeper) Unpin(ctx context.Context, c cid.Cid) error {
	release, err := k.Use(ctx, c)
	if err != nil {
		return fmt.Errorf("unpin %s: %w", store.CIDText(c), err)
	}
	defer release()
	now := k.now()
	if err := k.updateRecord(ctx, c, func(r *store.Retention) { r.Pinned, r.LastAccess = false, now }); err != nil {
		return fmt.Errorf("unpin %s: %w", store.CIDText(c), err)
	}
	k.log.Info("unpinned", "cid", store.CIDText(c))
	return nil
}

// Arrived stores manifest mb, naming tree, that came from the network with
// its record, as a cached dataset read now, unless it has a record already
// (an upload of the same content may have pinned it meanwhile). Should
// that fail (a full store with nothing to collect), the reader still
// reads, from the network: what it fetches is held only while it reads.
func (k *Keeper) Arrived(ctx context.Context, mb store.Block, tree cid.Cid) {
	now := k.now()
	k.uses.due(mb.CID, now)
	err := k.putDataset(ctx, mb, store.Retention{LastAccess: now, Tree: tree}, true)
	if err != nil && ctx.Err() == nil {
		k.log.Warn("keep a dataset read from the network as cached", "cid", store.CIDText(mb.CID), "err", err)
	}
}

// Accessed records a read of dataset mb.CID, whose manifest is mb and
// tree is tree, at most once per accessInterval. With restore (a network
// reader), a dataset removed while its reader was open (by the collector
// between two reads of the mount's reader, which holds the dataset only
// while each read runs, or by `rm`) gets its manifest back as a cached
// dataset: reading a CID through the mount or a stream keeps it, as the
// first read did.
func (k *Keeper) Accessed(ctx context.Context, mb store.Block, tree cid.Cid, restore bool) {
	c, now := mb.CID, k.now()
	if !k.uses.due(c, now) {
		return
	}
	k.recMu.Lock()
	r, err := k.rec.GetRetention(ctx, c)
	if err == nil && !r.Pinned && now.After(r.LastAccess) {
		r.LastAccess = now
		err = k.rec.PutRetention(ctx, c, r)
	}
	k.recMu.Unlock()
	if errors.Is(err, store.ErrNotFound) {
		err = nil
		if restore {
			err = k.putDataset(ctx, mb, store.Retention{LastAccess: now, Tree: tree}, true)
			if err == nil {
				k.log.Info("dataset read again after it was removed; kept as cached", "cid", store.CIDText(c))
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		k.log.Warn("record dataset access", "cid", store.CIDText(c), "err", err)
	}
}
