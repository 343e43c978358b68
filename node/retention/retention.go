// Package retention decides which datasets and blocks a node keeps: pins,
// the cache's TTL and LRU order under the quota, and the holds that work in
// progress (readers, uploads, background fetches) takes on datasets and
// trees so that nothing it counts on is collected under it.
//
// Every dataset held locally is either pinned, kept until it is removed on
// purpose (uploads, `meshfs pin`), or cached: it arrived from the network
// (a stream or mount read, a background fetch) and carries the time it was
// last read. A collection removes cached datasets nobody has read for
// Config.CacheTTL and, when the store is above HighWatermark of its quota,
// cached datasets in least-recently-used order until it is below
// LowWatermark. It never removes a pinned dataset, nor one in use: opened
// and not closed, being read, or being fetched in the background. Blocks
// shared with a dataset that stays are kept by the store's reference
// counts.
//
// A dataset without a retention record counts as pinned. Repositories
// written before records existed have none, and keeping what the user may
// have uploaded is the safe side: a cache that is never collected costs
// space, a collected upload may be lost. Unpin hands such a dataset to the
// collector. A manifest that arrives from the network gets its cached
// record when the node opens it (Arrived); only a crash in between leaves
// one without.
//
// A tree's leaves (and through their references, its blocks) are kept
// while a held dataset names the tree, which its record says
// (store.RetentionStore.TreeNamed), or while work in this process holds it
// (HoldTree). Two manifests of the same bytes name one tree, so removing
// either leaves the tree to the other. Every other tree is garbage: that of
// a removed dataset no other names, an upload's staging tree, whatever a
// crash left half written. It is reclaimed when its last holder lets go,
// and every tree is looked at when the node starts (Reconcile) and at each
// collection, which is what frees what a crash left.
package retention

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
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

// HighWatermark and LowWatermark of a quota, in bytes: above 90% the
// collector starts removing cached datasets, and it stops below 80%. They
// are the contract's (docs/DESIGN.md), not a setting; the quota itself is
// the store's, read at each collection, since it may change while the
// store is open and the store is what enforces it.
func HighWatermark(quota uint64) uint64 { return quota - quota/10 }
func LowWatermark(quota uint64) uint64  { return quota - quota/5 }

// Config is what a Keeper works on and whom it tells.
type Config struct {
	// Store is the local store, without the network and without
	// collecting when full (a Keeper is what makes room in it).
	Store store.BlockStore
	// Records are the retention records kept beside Store's blocks.
	Records store.RetentionStore
	// Clock is the time records are stamped and aged with; nil: time.Now.
	Clock func() time.Time
	// CacheTTL: a cached dataset nobody has read for this long is
	// collected; 0: never by age.
	CacheTTL time.Duration
	Logger   *slog.Logger // nil: slog.Default()
	// Life bounds what the Keeper does on its own: the sweep a tree's last
	// holder owes when it lets go. nil: context.Background().
	Life context.Context
	// Fetch starts bringing every block of dataset c into Store in the
	// background, holding c (AddUse, AddTreeHold) while it runs; closing
	// what it returns ends the hold of its own open. Pin needs it.
	Fetch func(ctx context.Context, c cid.Cid) (io.Closer, error)
	// Removed is told of each dataset once it is removed (by a collection
	// or Remove), so that what lies outside forgets it: its announcement,
	// the record of its finished fetch.
	Removed func(c cid.Cid)
	// Unnamed is told of each tree whose leaves are about to be deleted
	// since no dataset names it and nobody holds it, so that it is no
	// longer announced.
	Unnamed func(tree cid.Cid)
}

// Keeper holds a node's retention state; its methods are safe for
// concurrent use.
type Keeper struct {
	cfg  Config
	st   store.BlockStore
	rec  store.RetentionStore
	now  func() time.Time
	log  *slog.Logger
	life context.Context

	uses  uses
	trees treeHolds
	recMu sync.Mutex // serialises changes of retention records
	gcMu  sync.Mutex // one collection at a time

	reclaimMu sync.Mutex
	futile    time.Time // under reclaimMu: when a reclaim last freed nothing

	runs, datasets, bytes atomic.Uint64
}

// New makes the Keeper of cfg.Store. Before anything else uses the store,
// call Reconcile once.
func New(cfg Config) *Keeper {
	k := &Keeper{cfg: cfg, st: cfg.Store, rec: cfg.Records, now: cfg.Clock, log: cfg.Logger, life: cfg.Life}
	if k.now == nil {
		k.now = time.Now
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	if k.life == nil {
		k.life = context.Background()
	}
	k.uses.init()
	k.trees.init()
	return k
}

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

// Stats count collections since the Keeper was made, for metrics.
type Stats struct {
	Runs     uint64 // collections: periodic, on demand, and on a full store
	Datasets uint64 // cached datasets removed
	Bytes    uint64 // bytes of store usage freed
}

func (k *Keeper) Stats() Stats {
	return Stats{Runs: k.runs.Load(), Datasets: k.datasets.Load(), Bytes: k.bytes.Load()}
}

// Records reads every retention record of rs.
func Records(ctx context.Context, rs store.RetentionStore) (map[cid.Cid]store.Retention, error) {
	records := map[cid.Cid]store.Retention{}
	if err := rs.ForEachRetention(ctx, func(c cid.Cid, r store.Retention) error {
		records[c] = r
		return nil
	}); err != nil {
		return nil, err
	}
	return records, nil
}

// released wraps release so that calling it more than once lets go once:
// a reader closed twice must not end someone else's hold.
func released(release func()) func() {
	var once sync.Once
	return func() { once.Do(release) }
}
