package client

import (
	"errors"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/store"
)

// treeState remembers who provides a dataset.
type treeState struct {
	providers   map[peer.ID]bool
	discovering bool
	// lastDiscover is when the last lookup ended, and concluded whether it
	// got an answer from the DHT (providers, or a definite none) rather
	// than failing (no DHT peers yet, say): only a conclusive lookup may
	// fail a want early.
	lastDiscover time.Time
	concluded    bool
	// delivered counts the blocks of the tree verified, the last at
	// lastDelivery: a reader's measure of whether its wait is moving.
	delivered    uint64
	lastDelivery time.Time
	wanted       time.Time // when the tree was first wanted
}

// treeIdle is how long a tree nobody wants any more is remembered (its
// providers, its lookups): a reader coming back soon finds them, and a node
// that reads a new dataset every minute for a year does not keep them all.
const treeIdle = 10 * time.Minute

// lookAround is how long a tree is read from the peers at hand before its
// providers are looked up as well.
const lookAround = time.Second

// treeTracker keeps what we know of each tree wanted, and says when its
// providers are to be looked up. It keeps no lock: the client's lock
// guards it with the rest.
type treeTracker struct {
	now             func() time.Time
	rediscoverAfter time.Duration
	byCID           map[cid.Cid]*treeState
}

func newTreeTracker(now func() time.Time, rediscoverAfter time.Duration) *treeTracker {
	return &treeTracker{now: now, rediscoverAfter: rediscoverAfter, byCID: map[cid.Cid]*treeState{}}
}

// get is t's state, made (wanted from now) on first use.
func (tt *treeTracker) get(t cid.Cid) *treeState {
	ts := tt.byCID[t]
	if ts == nil {
		ts = &treeState{providers: map[peer.ID]bool{}, wanted: tt.now()}
		tt.byCID[t] = ts
	}
	return ts
}

// prune forgets the trees no want is for (active says which are) and
// that have been idle for treeIdle: not looked up, nothing delivered,
// nothing new wanted. It returns the trees forgotten.
func (tt *treeTracker) prune(now time.Time, active func(cid.Cid) bool) []cid.Cid {
	var gone []cid.Cid
	for t, ts := range tt.byCID {
		last := ts.wanted
		for _, at := range []time.Time{ts.lastDiscover, ts.lastDelivery} {
			if at.After(last) {
				last = at
			}
		}
		if ts.discovering || now.Sub(last) < treeIdle || active(t) {
			continue
		}
		delete(tt.byCID, t)
		gone = append(gone, t)
	}
	return gone
}

// known reports whether t has been wanted.
func (tt *treeTracker) known(t cid.Cid) bool {
	_, ok := tt.byCID[t]
	return ok
}

// lookAround reports whether ts's providers are to be looked up now,
// beside asking the peers at hand, and if so marks the lookup begun. A
// peer we happen to be connected to may be one holder of many, and
// readers of a popular dataset that hold it already are found only this
// way. Not at once: a short read would pay a lookup's round trips on its
// first block.
func (tt *treeTracker) lookAround(ts *treeState, now time.Time) bool {
	if ts.lastDiscover.IsZero() && !ts.discovering && now.Sub(ts.wanted) >= lookAround {
		ts.discovering = true
		return true
	}
	return false
}

// verdict is what becomes of a want nobody is left to ask.
type verdict int

const (
	keepWaiting verdict = iota // a lookup failed; retry later
	lookUp                     // look the tree up (begun: see nobodyLeft)
	giveUp                     // fail the want now
)

// nobodyLeft decides for a want of ts made at created that has nobody
// left to ask: every peer that holds the dataset or was asked said it
// lacks the block (or did not answer in time). If a lookup made since the
// want began, or within rediscoverAfter, found no one else, it fails now
// rather than at the caller's deadline: a missing CID is a prompt "not
// found", and a block lost everywhere goes to erasure decoding without
// waiting. (Without the second condition, a reader crossing a run of lost
// blocks waited for one more DHT lookup per block, each finding the same
// providers.) On lookUp the lookup is marked begun.
func (tt *treeTracker) nobodyLeft(ts *treeState, created, now time.Time) verdict {
	if ts.concluded && (ts.lastDiscover.After(created) || now.Sub(ts.lastDiscover) < tt.rediscoverAfter) {
		return giveUp
	}
	if !ts.concluded && now.Sub(ts.lastDiscover) < tt.rediscoverAfter && ts.lastDiscover.After(created) {
		return keepWaiting // within the caller's deadline
	}
	ts.discovering = true
	return lookUp
}

// ended records that a lookup of t ended now, and whether it concluded.
func (tt *treeTracker) ended(t cid.Cid, concluded bool) {
	ts := tt.get(t)
	ts.discovering = false
	ts.lastDiscover = tt.now()
	ts.concluded = concluded
}

// askable is whom to ask for a block of ts: its providers, else everyone
// connected.
func (ts *treeState) askable(connected []peer.ID) []peer.ID {
	if len(ts.providers) == 0 {
		return connected
	}
	ps := make([]peer.ID, 0, len(ts.providers))
	for p := range ts.providers {
		ps = append(ps, p)
	}
	return ps
}

// delivered counts a verified block of t, if t is known.
func (tt *treeTracker) delivered(t cid.Cid, now time.Time) {
	if ts := tt.byCID[t]; ts != nil {
		ts.delivered++
		ts.lastDelivery = now
	}
}

// progress is when t's last block was delivered and how many have been.
func (tt *treeTracker) progress(t cid.Cid) (time.Time, uint64) {
	if ts := tt.byCID[t]; ts != nil {
		return ts.lastDelivery, ts.delivered
	}
	return time.Time{}, 0
}

// forget drops p from the providers of every tree.
func (tt *treeTracker) forget(p peer.ID) {
	for _, ts := range tt.byCID {
		delete(ts.providers, p)
	}
}

// discover looks up providers of t, connects to them and remembers them.
func (c *Client) discover(t cid.Cid) {
	concluded := false
	defer func() {
		c.mu.Lock()
		c.trees.ended(t, concluded)
		c.mu.Unlock()
		c.poke()
	}()
	provs, err := c.disc.FindProviders(c.ctx, t)
	// A lookup that could not ask anyone is conclusive only when there is
	// nobody at all to ask: a node with no peers cannot find anything now.
	concluded = err == nil || errors.Is(err, store.ErrNotFound) || len(c.peers.Connected()) == 0
	if err != nil {
		c.log.Debug("exchange: discovery failed", "cid", store.CIDText(t), "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, ai := range provs {
		c.mu.Lock()
		banned := c.ledger.isBanned(ai.ID, c.now())
		c.mu.Unlock()
		if banned {
			continue // dialling it again would undo the ban
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.peers.Connect(c.ctx, ai); err != nil {
				c.log.Debug("exchange: cannot reach provider", "peer", ai.ID, "err", err)
				return
			}
			c.mu.Lock()
			c.trees.get(t).providers[ai.ID] = true
			c.pm.get(ai.ID)
			c.mu.Unlock()
			c.poke()
		}()
	}
	wg.Wait()
	c.log.Debug("exchange: discovered providers", "cid", store.CIDText(t), "count", len(provs))
}
