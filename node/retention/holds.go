package retention

// The holds: what keeps a dataset from the collector and a tree from the
// sweeps while work in this process counts on it. Readers, uploads and
// background fetches take them; collections and sweeps claim what nobody
// holds, and a holder that comes while a claim runs waits for it to end.

import (
	"context"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// holds counts the holds on each key and marks the keys claimed for
// deletion: a holder that comes while a key is claimed waits for the
// claim to end, and nobody claims a key that is held.
type holds struct {
	mu      sync.Mutex
	count   map[cid.Cid]int
	claimed map[cid.Cid]chan struct{}
}

func (h *holds) init() {
	h.count = map[cid.Cid]int{}
	h.claimed = map[cid.Cid]chan struct{}{}
}

// acquire holds key, waiting first while it is claimed.
func (h *holds) acquire(ctx context.Context, key cid.Cid) error {
	for {
		h.mu.Lock()
		ch, busy := h.claimed[key]
		if !busy {
			h.count[key]++
			h.mu.Unlock()
			return nil
		}
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// add holds key once more for a caller that holds it already, so that it
// cannot be claimed.
func (h *holds) add(key cid.Cid) {
	h.mu.Lock()
	h.count[key]++
	h.mu.Unlock()
}

// dropLocked ends one hold and reports whether it was the last; h.mu is
// held.
func (h *holds) dropLocked(key cid.Cid) bool {
	if h.count[key]--; h.count[key] > 0 {
		return false
	}
	delete(h.count, key)
	return true
}

// claimLocked claims key if nobody holds or claims it; h.mu is held.
func (h *holds) claimLocked(key cid.Cid) bool {
	if h.count[key] > 0 || h.claimed[key] != nil {
		return false
	}
	h.claimed[key] = make(chan struct{})
	return true
}

// unclaim ends a claim, letting the holders that wait for it go on.
func (h *holds) unclaim(key cid.Cid) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch := h.claimed[key]; ch != nil {
		close(ch)
		delete(h.claimed, key)
	}
}

// uses are the holds on datasets, so that the collector leaves them
// alone; the collector claims the one it removes, so that a reader that
// opens it meanwhile waits for the removal to end (and then finds it
// gone) instead of racing it.
type uses struct {
	holds
	// touched is when each dataset's access was last recorded (or found
	// not to need recording), for the accessInterval throttle.
	touched map[cid.Cid]time.Time
}

func (u *uses) init() {
	u.holds.init()
	u.touched = map[cid.Cid]time.Time{}
}

func (u *uses) drop(c cid.Cid) {
	u.mu.Lock()
	u.dropLocked(c)
	u.mu.Unlock()
}

// claim reserves c for removal if nobody uses it.
func (u *uses) claim(c cid.Cid) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.claimLocked(c) {
		return false
	}
	delete(u.touched, c)
	return true
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

// treeHolds are the holds on trees, so that a holder never writes into a
// tree whose leaves are being deleted; a sweep claims the tree it deletes.
// A sweep turned away by a hold is owed: the last holder to let go runs
// it. Otherwise letting go costs nothing, which matters, since every read
// of a dataset holds its tree while it runs.
type treeHolds struct {
	holds
	owed map[cid.Cid]bool
}

func (h *treeHolds) init() {
	h.holds.init()
	h.owed = map[cid.Cid]bool{}
}

// drop ends one hold and reports whether the tree is now to be swept: it
// was the last hold, and a sweep was turned away meanwhile.
func (h *treeHolds) drop(tree cid.Cid) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dropLocked(tree) {
		return false
	}
	owed := h.owed[tree]
	delete(h.owed, tree)
	return owed
}

// claim marks tree as being swept if nobody holds it (else the sweep is
// owed to the last holder).
func (h *treeHolds) claim(tree cid.Cid) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count[tree] > 0 {
		h.owed[tree] = true
		return false
	}
	return h.claimLocked(tree)
}

// Use marks dataset c in use until release is called: no collection
// removes it meanwhile. Should a collection be removing it right now, Use
// waits for that to end first, so that the caller then finds it gone.
func (k *Keeper) Use(ctx context.Context, c cid.Cid) (release func(), err error) {
	if err := k.uses.acquire(ctx, c); err != nil {
		return nil, err
	}
	return released(func() { k.uses.drop(c) }), nil
}

// AddUse is Use for a caller that has c in use already.
func (k *Keeper) AddUse(c cid.Cid) (release func()) {
	k.uses.add(c)
	return released(func() { k.uses.drop(c) })
}

// HoldTree keeps tree's leaves until the returned release, which sweeps
// the tree if that was its last hold, a sweep was turned away meanwhile
// (the dataset was removed while held), and no dataset names it.
func (k *Keeper) HoldTree(ctx context.Context, tree cid.Cid) (release func(), err error) {
	if err := k.trees.acquire(ctx, tree); err != nil {
		return nil, err
	}
	return k.treeReleaser(tree), nil
}

// AddTreeHold is HoldTree for a caller that holds tree already.
func (k *Keeper) AddTreeHold(tree cid.Cid) (release func()) {
	k.trees.add(tree)
	return k.treeReleaser(tree)
}

func (k *Keeper) treeReleaser(tree cid.Cid) func() {
	return released(func() {
		if !k.trees.drop(tree) {
			return
		}
		// Its own context: the holder's may be why it lets go.
		ctx, cancel := context.WithTimeout(k.life, time.Minute)
		defer cancel()
		if _, err := k.SweepTree(ctx, tree); err != nil && ctx.Err() == nil {
			k.log.Warn("reclaim the leaves of a tree no dataset names", "tree", store.CIDText(tree), "err", err)
		}
	})
}
