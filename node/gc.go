package node

// Retention and garbage collection.
//
// Every dataset held locally is either pinned, kept until it is removed on
// purpose (uploads, `meshfs pin`), or cached: it arrived from the network
// (a stream or mount read, a background fetch) and carries the time it was
// last read. A collection removes cached datasets nobody has read for
// Config.CacheTTL and, when the store is above highWatermark of its quota,
// cached datasets in least-recently-used order until it is below
// lowWatermark. It never removes a pinned dataset, nor one in use: opened
// and not closed, being read, or being fetched in the background. Blocks
// shared with a dataset that stays are kept by the store's reference
// counts.
//
// A dataset without a retention record counts as pinned. Repositories
// written before records existed have none, and keeping what the user may
// have uploaded is the safe side: a cache that is never collected costs
// space, a collected upload may be lost. `meshfs unpin` hands such a
// dataset to the collector. A manifest that arrives from the network gets
// its cached record when the node opens it; only a crash in between leaves
// one without.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/repo"
)

// compacter is a store that can give the space of removed blocks back to
// the file system at once (the repository; the memory store has nothing to
// compact).
type compacter interface {
	Compact(ctx context.Context) error
}

var (
	_ store.RetentionStore = (*repo.Store)(nil)
	_ store.RetentionStore = (*store.Memory)(nil)
	_ compacter            = (*repo.Store)(nil)
)

const (
	// accessInterval: a dataset's last access is written at most this
	// often, so that reads do not turn into index writes. The LRU order
	// and the TTL are therefore accurate to about a minute.
	accessInterval = time.Minute
	// reclaimBackoff: after a collection on a full store freed nothing
	// (everything is pinned or in use), further writes that find the store
	// full fail at once for this long instead of collecting again.
	reclaimBackoff = 5 * time.Second
)

// highWatermark and lowWatermark of a quota, in bytes: above 90% the
// collector starts removing cached datasets, and it stops below 80%.
func highWatermark(quota uint64) uint64 { return quota - quota/10 }
func lowWatermark(quota uint64) uint64  { return quota - quota/5 }

// GCResult is what one collection removed.
type GCResult struct {
	Removed []Collected
	// BytesFreed is how much the store's usage dropped with the removals
	// and the sweep.
	BytesFreed uint64
	// Unreferenced is the part of BytesFreed that no dataset needed: what
	// an interrupted upload or fetch, or a removal cut short, left.
	Unreferenced uint64
}

// Collected is one dataset a collection removed.
type Collected struct {
	CID        cid.Cid
	Reason     string // "expired" (not read for CacheTTL) or "quota" (LRU under quota pressure)
	LastAccess time.Time
	Bytes      uint64 // how much the store's usage dropped with it
}

// gcCounters feed the metrics.
type gcCounters struct {
	runs, datasets, bytes atomic.Uint64
}

// uses tracks which datasets are in use, so that the collector leaves
// them alone, and which one the collector is removing, so that a reader
// that opens it meanwhile waits for the removal to end (and then finds it
// gone) instead of racing it.
type uses struct {
	mu         sync.Mutex
	count      map[cid.Cid]int
	collecting map[cid.Cid]chan struct{}
	// touched is when each dataset's access was last recorded (or found
	// not to need recording), for the accessInterval throttle.
	touched map[cid.Cid]time.Time
}

func (u *uses) init() {
	u.count = map[cid.Cid]int{}
	u.collecting = map[cid.Cid]chan struct{}{}
	u.touched = map[cid.Cid]time.Time{}
}

// acquire marks c in use until release is called, waiting first while
// the collector removes it.
func (u *uses) acquire(ctx context.Context, c cid.Cid) (release func(), err error) {
	for {
		u.mu.Lock()
		ch, busy := u.collecting[c]
		if !busy {
			u.count[c]++
			u.mu.Unlock()
			return u.releaser(c), nil
		}
		u.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// add marks c in use once more; the caller already holds it, so the
// collector cannot be removing it.
func (u *uses) add(c cid.Cid) (release func()) {
	u.mu.Lock()
	u.count[c]++
	u.mu.Unlock()
	return u.releaser(c)
}

func (u *uses) releaser(c cid.Cid) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			if u.count[c]--; u.count[c] <= 0 {
				delete(u.count, c)
			}
			u.mu.Unlock()
		})
	}
}

// claim reserves c for removal if nobody uses it; unclaim ends that.
func (u *uses) claim(c cid.Cid) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.count[c] > 0 || u.collecting[c] != nil {
		return false
	}
	u.collecting[c] = make(chan struct{})
	delete(u.touched, c)
	return true
}

func (u *uses) unclaim(c cid.Cid) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if ch := u.collecting[c]; ch != nil {
		close(ch)
		delete(u.collecting, c)
	}
}

// due reports whether c's access should be recorded at now, and if so
// notes that it is.
func (u *uses) due(c cid.Cid, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if last, ok := u.touched[c]; ok && now.Sub(last) < accessInterval && !now.Before(last) {
		return false
	}
	u.touched[c] = now
	return true
}

func (u *uses) forget(c cid.Cid) {
	u.mu.Lock()
	delete(u.touched, c)
	u.mu.Unlock()
}

// putDataset stores manifest b with its record r in one commit (unless
// onlyNew and the dataset has a record already), collecting cached
// datasets to make room when the store is full.
func (n *Node) putDataset(ctx context.Context, b store.Block, r store.Retention, onlyNew bool) error {
	put := func() error {
		n.recMu.Lock()
		defer n.recMu.Unlock()
		if onlyNew {
			if _, err := n.ret.GetRetention(ctx, b.CID); !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return n.ret.PutDataset(ctx, b, r)
	}
	// Not under recMu: a collection removes datasets, which takes it.
	err := put()
	if errors.Is(err, store.ErrQuotaExceeded) && n.reclaim(ctx, uint64(len(b.Data))) {
		err = put()
	}
	return err
}

// updateRecord changes the record of dataset c with change; a dataset
// without one is not held (store.ErrNotFound).
func (n *Node) updateRecord(ctx context.Context, c cid.Cid, change func(*store.Retention)) error {
	n.recMu.Lock()
	defer n.recMu.Unlock()
	n.uses.due(c, n.now())
	r, err := n.ret.GetRetention(ctx, c)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("not held locally: %w", err)
	}
	if err != nil {
		return err
	}
	change(&r)
	return n.ret.PutRetention(ctx, c, r)
}

// forget drops what the node keeps in memory about a dataset it no longer
// holds.
func (n *Node) forget(c cid.Cid) {
	n.uses.forget(c)
	n.fetch.forget(c)
}

// PinResult says what Pin found.
type PinResult struct {
	// Local: the dataset's manifest was held here when it was pinned.
	Local bool
	// Fetching: a background fetch was started to bring in the blocks
	// not held yet (progress: FetchStatus).
	Fetching bool
}

// Pin keeps dataset c from garbage collection until Unpin. A dataset not
// held completely is fetched in the background, wherever on the network it
// is; its manifest must be found within ctx.
func (n *Node) Pin(ctx context.Context, c cid.Cid) (PinResult, error) {
	release, err := n.uses.acquire(ctx, c)
	if err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	defer release()
	local, err := n.store.Has(ctx, c)
	if err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	if local {
		r, err := n.ret.GetRetention(ctx, c)
		if err != nil {
			return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
		}
		if r.Pinned {
			return PinResult{Local: true}, nil // complete, as uploads are
		}
	}
	// A cached dataset may hold only the blocks someone read; pinning
	// it means keeping all of it.
	d, err := n.Fetch(ctx, c)
	if err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	defer d.Close()
	now := n.now()
	if err := n.updateRecord(ctx, c, func(r *store.Retention) { r.Pinned, r.LastAccess = true, now }); err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", store.CIDText(c), err)
	}
	n.log.Info("pinned", "cid", store.CIDText(c), "local", local)
	return PinResult{Local: local, Fetching: true}, nil
}

// Unpin makes dataset c cached, as if it had just been read: the collector
// may remove it once it expires or the store needs the space.
func (n *Node) Unpin(ctx context.Context, c cid.Cid) error {
	release, err := n.uses.acquire(ctx, c)
	if err != nil {
		return fmt.Errorf("unpin %s: %w", store.CIDText(c), err)
	}
	defer release()
	now := n.now()
	if err := n.updateRecord(ctx, c, func(r *store.Retention) { r.Pinned, r.LastAccess = false, now }); err != nil {
		return fmt.Errorf("unpin %s: %w", store.CIDText(c), err)
	}
	n.log.Info("unpinned", "cid", store.CIDText(c))
	return nil
}

// GC runs a collection now (see the top of this file) and, when it freed
// anything, compacts the store so that the disk space is reclaimed too.
func (n *Node) GC(ctx context.Context) (GCResult, error) {
	return n.gc(ctx, true)
}

// gc is GC; blocks also sweeps unreferenced blocks, which only earlier
// versions left (see sweepTrees), so the collection loop does not.
func (n *Node) gc(ctx context.Context, blocks bool) (GCResult, error) {
	res, err := n.collect(ctx, 0, "gc")
	if err != nil {
		return res, err
	}
	if blocks {
		freed, err := n.freed(ctx, func() error { return n.sweepTrees(ctx, true) })
		res.Unreferenced += freed
		res.BytesFreed += freed
		n.gcStats.bytes.Add(freed)
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	if res.BytesFreed == 0 {
		return res, nil
	}
	if c, ok := n.store.(compacter); ok {
		if err := c.Compact(ctx); err != nil {
			return res, fmt.Errorf("gc: compact: %w", err)
		}
	}
	return res, nil
}

// MakeRoom collects as GC does, but counts need more bytes as used, so
// that an upload of that size finds room under the quota if removing
// cached datasets can make it.
func (n *Node) MakeRoom(ctx context.Context, need uint64) (GCResult, error) {
	return n.collect(ctx, need, "upload")
}

// gcLoop collects every interval until the node closes.
func (n *Node) gcLoop(interval time.Duration) {
	defer n.bg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := n.gc(n.ctx, false); err != nil && n.ctx.Err() == nil {
			n.log.Warn("garbage collection failed", "err", err)
		}
	}
}

// freed runs sweep and reports how much the store's usage dropped.
func (n *Node) freed(ctx context.Context, sweep func() error) (uint64, error) {
	before, err := n.store.Usage(ctx)
	if err != nil {
		return 0, err
	}
	err = sweep()
	after, uerr := n.store.Usage(ctx)
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
func (n *Node) collect(ctx context.Context, need uint64, trigger string) (GCResult, error) {
	n.gcMu.Lock()
	defer n.gcMu.Unlock()
	n.gcStats.runs.Add(1)
	var res GCResult
	// Trees nobody needs first: their space is free to take before any
	// cached dataset's.
	freed, err := n.freed(ctx, func() error { return n.sweepTrees(ctx, false) })
	res.Unreferenced, res.BytesFreed = freed, freed
	n.gcStats.bytes.Add(freed)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	cands, err := n.candidates(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	now := n.now()
	var rest []candidate
	for _, cd := range cands {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		if ttl := n.cfg.CacheTTL; ttl > 0 && now.Sub(cd.last) > ttl && n.remove(ctx, cd, "expired", &res) {
			continue
		}
		rest = append(rest, cd)
	}
	u, err := n.store.Usage(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	if q := u.QuotaBytes; q > 0 && need > q {
		// Not even an empty store would take it: emptying the cache for
		// a write that fails anyway would only lose it.
		n.log.Info("gc: nothing collected for a write larger than the whole quota", "need", need, "quota", q, "trigger", trigger)
	} else if q > 0 && u.UsedBytes+need > highWatermark(q) {
		for _, cd := range rest {
			if u.UsedBytes+need < lowWatermark(q) {
				break
			}
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
			if !n.remove(ctx, cd, "quota", &res) {
				continue
			}
			if u, err = n.store.Usage(ctx); err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
		}
		if u.UsedBytes+need > highWatermark(q) {
			n.log.Warn("gc: store stays above its high watermark: the rest is pinned or in use",
				"used", u.UsedBytes, "need", need, "quota", q, "trigger", trigger)
		}
	}
	if len(res.Removed) > 0 || res.Unreferenced > 0 {
		n.log.Info("gc: collected", "trigger", trigger, "datasets", len(res.Removed), "bytes", res.BytesFreed, "unreferenced", res.Unreferenced)
	} else {
		n.log.Debug("gc: nothing to collect", "trigger", trigger, "cached", len(cands))
	}
	return res, nil
}

// candidates lists the cached datasets held, least recently used first.
// A record is there exactly while its manifest is (they are written and
// removed together, and start-up drops the strays earlier versions left),
// so the records alone say what is held.
func (n *Node) candidates(ctx context.Context) ([]candidate, error) {
	records := map[cid.Cid]store.Retention{}
	if err := n.ret.ForEachRetention(ctx, func(c cid.Cid, r store.Retention) error {
		records[c] = r
		return nil
	}); err != nil {
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
func (n *Node) remove(ctx context.Context, cd candidate, reason string, res *GCResult) bool {
	c := cd.cid
	if !n.uses.claim(c) {
		n.log.Debug("gc: dataset in use, kept", "cid", store.CIDText(c), "reason", reason)
		return false
	}
	defer n.uses.unclaim(c)
	n.recMu.Lock()
	r, err := n.ret.GetRetention(ctx, c)
	n.recMu.Unlock()
	if err != nil || r.Pinned || !r.LastAccess.Equal(cd.last) {
		return false
	}
	freed, err := n.freed(ctx, func() error { return n.drop(ctx, c) })
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("gc: removing a dataset failed", "cid", store.CIDText(c), "err", err)
		}
		return false
	}
	res.Removed = append(res.Removed, Collected{CID: c, Reason: reason, LastAccess: cd.last, Bytes: freed})
	res.BytesFreed += freed
	n.gcStats.datasets.Add(1)
	n.gcStats.bytes.Add(freed)
	n.log.Info("gc: removed cached dataset", "cid", store.CIDText(c), "reason", reason,
		"lastAccess", cd.last.Format(time.RFC3339), "bytes", freed)
	return true
}

// drop removes a dataset, for the collector and for Delete. Its manifest
// and record go in one commit: from then on the dataset is gone, whole.
// Its tree's leaves go next, unless another dataset names the tree or work
// holds it; should that step be cut short, the next sweep finishes it.
func (n *Node) drop(ctx context.Context, c cid.Cid) error {
	m, err := n.Manifest(ctx, c)
	if err != nil {
		return err
	}
	n.recMu.Lock()
	err = n.ret.DeleteDataset(ctx, c)
	n.recMu.Unlock()
	if err != nil {
		return fmt.Errorf("manifest and record: %w", err)
	}
	n.disc.Forget(c)
	n.forget(c)
	if _, err := n.sweepTree(ctx, m.TreeCID); err != nil && ctx.Err() == nil {
		n.log.Warn("dataset removed; reclaiming its blocks failed, the next collection retries",
			"cid", store.CIDText(c), "err", err)
	}
	return nil
}

// reclaim runs a collection when a write finds the store full; it reports
// whether the write should be tried again. Writes that fail together share
// one collection.
func (n *Node) reclaim(ctx context.Context, need uint64) bool {
	n.reclaimMu.Lock()
	defer n.reclaimMu.Unlock()
	if u, err := n.store.Usage(ctx); err == nil && (u.QuotaBytes == 0 || u.UsedBytes+need <= u.QuotaBytes) {
		return true // another collection made room meanwhile
	}
	if !n.futile.IsZero() && n.now().Sub(n.futile) < reclaimBackoff {
		return false
	}
	res, err := n.collect(ctx, need, "store full")
	if err != nil || res.BytesFreed == 0 {
		n.futile = n.now()
		return false
	}
	n.futile = time.Time{}
	return true
}

// reclaimer is the node's policy for a full store (store.Reclaiming):
// collect cached datasets, least recently used first.
type reclaimer struct{ n *Node }

func (r reclaimer) Reclaim(ctx context.Context, need uint64) bool { return r.n.reclaim(ctx, need) }
