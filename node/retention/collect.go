package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// compacter is a store that can give the space of removed blocks back to
// the file system at once (the repository; the memory store has nothing to
// compact).
type compacter interface {
	Compact(ctx context.Context) error
}

// GC runs a collection now and, when it freed anything, compacts the store
// so that the disk space is reclaimed too.
func (k *Keeper) GC(ctx context.Context) (GCResult, error) {
	return k.gc(ctx, true)
}

// gc is GC; blocks also sweeps unreferenced blocks, which only earlier
// versions left (see sweepTrees), so the collection loop does not.
func (k *Keeper) gc(ctx context.Context, blocks bool) (GCResult, error) {
	res, err := k.collect(ctx, 0, "gc")
	if err != nil {
		return res, err
	}
	if blocks {
		freed, err := k.freed(ctx, func() error { return k.sweepTrees(ctx, true) })
		res.Unreferenced += freed
		res.BytesFreed += freed
		k.bytes.Add(freed)
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	if res.BytesFreed == 0 {
		return res, nil
	}
	if c, ok := k.st.(compacter); ok {
		if err := c.Compact(ctx); err != nil {
			return res, fmt.Errorf("gc: compact: %w", err)
		}
	}
	return res, nil
}

// MakeRoom collects as GC does, but counts need more bytes as used, so
// that an upload of that size finds room under the quota if removing
// cached datasets can make it.
func (k *Keeper) MakeRoom(ctx context.Context, need uint64) (GCResult, error) {
	return k.collect(ctx, need, "upload")
}

// Run collects every interval until ctx ends.
func (k *Keeper) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := k.gc(ctx, false); err != nil && ctx.Err() == nil {
			k.log.Warn("garbage collection failed", "err", err)
		}
	}
}

// Reclaim runs a collection when a write finds the store full; it reports
// whether the write should be tried again. Writes that fail together share
// one collection. It makes the Keeper the policy of store.Reclaiming.
func (k *Keeper) Reclaim(ctx context.Context, need uint64) bool {
	k.reclaimMu.Lock()
	defer k.reclaimMu.Unlock()
	if u, err := k.st.Usage(ctx); err == nil && (u.QuotaBytes == 0 || u.UsedBytes+need <= u.QuotaBytes) {
		return true // another collection made room meanwhile
	}
	if !k.futile.IsZero() && k.now().Sub(k.futile) < reclaimBackoff {
		return false
	}
	res, err := k.collect(ctx, need, "store full")
	if err != nil || res.BytesFreed == 0 {
		k.futile = k.now()
		return false
	}
	k.futile = time.Time{}
	return true
}

// freed runs sweep and reports how much the store's usage dropped.
func (k *Keeper) freed(ctx context.Context, sweep func() error) (uint64, error) {
	before, err := k.st.Usage(ctx)
	if err != nil {
		return 0, err
	}
	err = sweep()
	after, uerr := k.st.Usage(ctx)
	if uerr != nil || after.UsedBytes >= before.UsedBytes {
		return 0, errors.Join(err, uerr)
	}
	return before.UsedBytes - after.UsedBytes, err
}

// candidate is a cached dataset the collector may remove.
type candidate struct {
	cid  cid.Cid
	last time.Time
}

// collect is one collection; trigger names what started it in the log.
func (k *Keeper) collect(ctx context.Context, need uint64, trigger string) (GCResult, error) {
	k.gcMu.Lock()
	defer k.gcMu.Unlock()
	k.runs.Add(1)
	var res GCResult
	// Trees nobody needs first: their space is free to take before any
	// cached dataset's.
	freed, err := k.freed(ctx, func() error { return k.sweepTrees(ctx, false) })
	res.Unreferenced, res.BytesFreed = freed, freed
	k.bytes.Add(freed)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	cands, err := k.candidates(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	now := k.now()
	var rest []candidate
	for _, cd := range cands {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		if ttl := k.cfg.CacheTTL; ttl > 0 && now.Sub(cd.last) > ttl && k.remove(ctx, cd, "expired", &res) {
			continue
		}
		rest = append(rest, cd)
	}
	u, err := k.st.Usage(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	if q := u.QuotaBytes; q > 0 && need > q {
		// Not even an empty store would take it: emptying the cache for
		// a write that fails anyway would only lose it.
		k.log.Info("gc: nothing collected for a write larger than the whole quota", "need", need, "quota", q, "trigger", trigger)
	} else if q > 0 && u.UsedBytes+need > HighWatermark(q) {
		for _, cd := range rest {
			if u.UsedBytes+need < LowWatermark(q) {
				break
			}
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
			if !k.remove(ctx, cd, "quota", &res) {
				continue
			}
			if u, err = k.st.Usage(ctx); err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
		}
		if u.UsedBytes+need > HighWatermark(q) {
			k.log.Warn("gc: store stays above its high watermark: the rest is pinned or in use",
				"used", u.UsedBytes, "need", need, "quota", q, "trigger", trigger)
		}
	}
	if len(res.Removed) > 0 || res.Unreferenced > 0 {
		k.log.Info("gc: collected", "trigger", trigger, "datasets", len(res.Removed), "bytes", res.BytesFreed, "unreferenced", res.Unreferenced)
	} else {
		k.log.Debug("gc: nothing to collect", "trigger", trigger, "cached", len(cands))
	}
	return res, nil
}

// candidates lists the cached datasets held, least recently used first.
// A record is there exactly while its manifest is (they are written and
// removed together, and Reconcile drops the strays earlier versions left),
// so the records alone say what is held.
func (k *Keeper) candidates(ctx context.Context) ([]candidate, error) {
	records, err := Records(ctx, k.rec)
	if err != nil {
		return nil, err
	}
	var out []candidate
	for c, r := range records {
		if !r.Pinned {
			out = append(out, candidate{c, r.LastAccess})
		}
	}
	slices.SortFunc(out, func(a, b candidate) int {
		if d := a.last.Compare(b.last); d != 0 {
			return d
		}
		return cmp.Compare(a.cid.KeyString(), b.cid.KeyString())
	})
	return out, nil
}

// remove collects one cached dataset unless it is in use, or was pinned or
// read since it was listed; it reports whether it did.
func (k *Keeper) remove(ctx context.Context, cd candidate, reason string, res *GCResult) bool {
	c := cd.cid
	if !k.uses.claim(c) {
		k.log.Debug("gc: dataset in use, kept", "cid", store.CIDText(c), "reason", reason)
		return false
	}
	defer k.uses.unclaim(c)
	k.recMu.Lock()
	r, err := k.rec.GetRetention(ctx, c)
	k.recMu.Unlock()
	if err != nil || r.Pinned || !r.LastAccess.Equal(cd.last) {
		return false
	}
	freed, err := k.freed(ctx, func() error { return k.Remove(ctx, c) })
	if err != nil {
		if ctx.Err() == nil {
			k.log.Warn("gc: removing a dataset failed", "cid", store.CIDText(c), "err", err)
		}
		return false
	}
	res.Removed = append(res.Removed, Collected{CID: c, Reason: reason, LastAccess: cd.last, Bytes: freed})
	res.BytesFreed += freed
	k.datasets.Add(1)
	k.bytes.Add(freed)
	k.log.Info("gc: removed cached dataset", "cid", store.CIDText(c), "reason", reason,
		"lastAccess", cd.last.Format(time.RFC3339), "bytes", freed)
	return true
}

// Remove drops dataset c, pinned or not, in use or not: for the collector
// (which has claimed it) and for a removal on purpose. Its manifest and
// record go in one commit: from then on the dataset is gone, whole. Its
// tree's leaves go next, unless another dataset names the tree or work
// holds it; should that step be cut short, the next sweep finishes it.
func (k *Keeper) Remove(ctx context.Context, c cid.Cid) error {
	_, m, err := manifest.Read(ctx, k.st, c)
	if err != nil {
		return err
	}
	k.recMu.Lock()
	err = k.rec.DeleteDataset(ctx, c)
	k.recMu.Unlock()
	if err != nil {
		return fmt.Errorf("manifest and record: %w", err)
	}
	k.uses.forget(c)
	if k.cfg.Removed != nil {
		k.cfg.Removed(c)
	}
	if _, err := k.SweepTree(ctx, m.TreeCID); err != nil && ctx.Err() == nil {
		k.log.Warn("dataset removed; reclaiming its blocks failed, the next collection retries",
			"cid", store.CIDText(c), "err", err)
	}
	return nil
}
