package client

import (
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// want is one block being fetched, shared by every caller that asked for it.
type want struct {
	addr    message.Address
	key     message.Key
	root    merkle.Digest // tree root, for leaf addresses
	waiters int
	done    chan struct{}
	leaf    store.Leaf
	block   store.Block
	err     error

	haves     map[peer.ID]bool // answered Have
	dontHaves map[peer.ID]bool // answered DontHave, or sent a bad block
	// slow holds when a peer last let a WantBlock for this block time out:
	// it is passed over for a BlockTimeout, then may be asked again, since
	// a slow honest peer may be the only one that has the block.
	slow      map[peer.ID]time.Time
	askedHave map[peer.ID]time.Time
	sentTo    peer.ID // WantBlock outstanding here ("" when none)
	sentAt    time.Time
	sentPos   int // how many wants the peer had outstanding before it
	created   time.Time
	resolved  bool
	// urgent: some waiter is a read, not background work (store.Background).
	// It stays set if that reader gives up; the want is then done soon.
	urgent bool
}

// target is a CID whose providers discovery can find for a want: the tree of
// a leaf, the block itself otherwise (manifests are announced by CID).
func target(a message.Address) cid.Cid {
	if a.Leaf {
		return a.Tree
	}
	return a.CID
}

// wantManager keeps the pending wants: one per block, however many callers
// wait for it, in the order they came. It keeps no lock: the client's lock
// guards it with the rest. A want's slot at a peer is the peer manager's:
// what ends a want hands back the peer whose slot it held.
type wantManager struct {
	now   func() time.Time
	byKey map[message.Key]*want
	order []*want // wants by arrival: earlier blocks of a stream first
	queue []*want // pending's answer, kept for its backing array
}

func newWantManager(now func() time.Time) *wantManager {
	return &wantManager{now: now, byKey: map[message.Key]*want{}}
}

// add counts a caller waiting for a: on the want pending for it, or on a
// new one. urgent says the caller is a reader, not background work.
func (wm *wantManager) add(a message.Address, root merkle.Digest, urgent bool) (w *want, coalesced bool) {
	key := a.Key()
	w = wm.byKey[key]
	if w == nil {
		w = &want{addr: a, key: key, root: root, done: make(chan struct{}), created: wm.now(),
			haves: map[peer.ID]bool{}, dontHaves: map[peer.ID]bool{}, slow: map[peer.ID]time.Time{}, askedHave: map[peer.ID]time.Time{}}
		wm.byKey[key] = w
		wm.order = append(wm.order, w)
	} else {
		coalesced = true
	}
	w.urgent = w.urgent || urgent
	w.waiters++
	return w, coalesced
}

// get is the want pending for k, or nil.
func (wm *wantManager) get(k message.Key) *want { return wm.byKey[k] }

// each calls f on every pending want; f may resolve it.
func (wm *wantManager) each(f func(*want)) {
	for _, w := range wm.byKey {
		f(w)
	}
}

// abandon drops one waiter of w. When it was the last, the want ends
// unresolved for anyone, and abandon returns the peer it was outstanding
// at, which should be told to cancel it.
func (wm *wantManager) abandon(w *want) (cancelAt peer.ID) {
	w.waiters--
	if w.waiters == 0 && !w.resolved {
		w.resolved = true
		delete(wm.byKey, w.key)
		return w.sentTo
	}
	return ""
}

// resolve completes w with err for every waiter, and returns the peer it
// was outstanding at ("" if none, or if w was already done).
func (wm *wantManager) resolve(w *want, err error) (held peer.ID) {
	if w.resolved {
		return ""
	}
	w.resolved = true
	w.err = err
	delete(wm.byKey, w.key)
	held, w.sentTo = w.sentTo, ""
	close(w.done)
	return held
}

// pending is the wants not done, those first picks before the others,
// each in arrival order. The slice is reused by the next call.
func (wm *wantManager) pending(first func(*want) bool) []*want {
	live := wm.order[:0]
	for _, w := range wm.order {
		if !w.resolved {
			live = append(live, w)
		}
	}
	clear(wm.order[len(live):])
	wm.order = live
	q := wm.queue[:0]
	for _, pass := range []bool{true, false} {
		for _, w := range live {
			if first(w) == pass {
				q = append(q, w)
			}
		}
	}
	clear(q[len(q):cap(q)]) // no hold on wants done since the last pass
	wm.queue = q
	return q
}

// serving is the peers that have wants of tree outstanding.
func (wm *wantManager) serving(tree cid.Cid) []peer.ID {
	var ps []peer.ID
	seen := map[peer.ID]bool{}
	for _, w := range wm.byKey {
		if p := w.sentTo; p != "" && !seen[p] && target(w.addr).Equals(tree) {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	return ps
}

// forget drops p's presences and the wants outstanding at it, which go
// elsewhere on the next pass.
func (wm *wantManager) forget(p peer.ID) {
	for _, w := range wm.byKey {
		delete(w.haves, p)
		if w.sentTo == p {
			w.sentTo = ""
		}
	}
}
