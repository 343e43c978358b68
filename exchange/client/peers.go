package client

import (
	"cmp"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// peerState is what we know of a peer: its load, speed and holdings.
type peerState struct {
	inflight int
	latency  time.Duration // EWMA of WantBlock → Block
	// The peer's pace: the time it takes per block while it has wants
	// outstanding, from the gaps between its deliveries (paceTime over
	// paceBlocks, both decaying by paceDecay per block). busy says it
	// still had wants outstanding when its last block came, at lastBlock.
	paceTime, paceBlocks float64
	lastBlock            time.Time
	busy                 bool
	price                uint64
	haveTrees            map[cid.Cid]bool // trees it has said Have for
	// congested: a want list to this peer found its queue full; it is
	// passed over until then.
	congested time.Time
}

// hearer tells when bytes last came from a peer (Sender.LastHeard).
type hearer interface {
	LastHeard(p peer.ID) time.Time
}

// peerManager keeps the state of every peer we know and chooses among
// them. It keeps no lock: the client's lock guards it with the rest.
type peerManager struct {
	now      func() time.Time
	heard    hearer // nil: only blocks count as being heard from
	limit    int    // the most wants outstanding at one peer (Options.Window)
	maxPrice uint64
	timeout  time.Duration // Options.BlockTimeout
	st       map[peer.ID]*peerState
	// live is the peers connected at this scheduling pass. Only they are
	// sent WantBlocks: a message from a peer may be handled after its
	// disconnect was (PeerGone), bringing back its state, and a WantBlock
	// to a peer that is gone would wait out BlockTimeout.
	live map[peer.ID]bool
}

func newPeerManager(now func() time.Time, heard hearer, opts Options) *peerManager {
	return &peerManager{now: now, heard: heard, limit: opts.Window, maxPrice: opts.MaxPrice, timeout: opts.BlockTimeout,
		st: map[peer.ID]*peerState{}, live: map[peer.ID]bool{}}
}

// get is p's state, made on first use.
func (pm *peerManager) get(p peer.ID) *peerState {
	st := pm.st[p]
	if st == nil {
		st = &peerState{haveTrees: map[cid.Cid]bool{}}
		pm.st[p] = st
	}
	return st
}

// lookup is p's state, nil if unknown.
func (pm *peerManager) lookup(p peer.ID) *peerState { return pm.st[p] }

func (pm *peerManager) remove(p peer.ID) { delete(pm.st, p) }

// forgetTree drops every peer's word that it holds t.
func (pm *peerManager) forgetTree(t cid.Cid) {
	for _, st := range pm.st {
		delete(st.haveTrees, t)
	}
}

// setLive records the peers connected now.
func (pm *peerManager) setLive(connected []peer.ID) {
	clear(pm.live)
	for _, p := range connected {
		pm.live[p] = true
	}
}

// holds reports whether p has said Have for blocks of tree t.
func (pm *peerManager) holds(p peer.ID, t cid.Cid) bool {
	st := pm.st[p]
	return st != nil && st.haveTrees[t]
}

// congest passes p over until then: its send queue is full.
func (pm *peerManager) congest(p peer.ID, until time.Time) {
	if st := pm.st[p]; st != nil {
		st.congested = until
	}
}

func (pm *peerManager) isCongested(p peer.ID, now time.Time) bool {
	st := pm.st[p]
	return st != nil && now.Before(st.congested)
}

// take gives p one more want outstanding and returns how many it had
// before.
func (pm *peerManager) take(p peer.ID) int {
	st := pm.get(p)
	pos := st.inflight
	if st.inflight == 0 {
		// Idle since its wants last ran out, however they did (delivered,
		// refused, timed out, cancelled): that wait is not its pace.
		st.busy = false
	}
	st.inflight++
	return pos
}

// release takes one want outstanding off p.
func (pm *peerManager) release(p peer.ID) {
	if st := pm.st[p]; st != nil && st.inflight > 0 {
		st.inflight--
	}
}

// inflight is the wants outstanding over all peers.
func (pm *peerManager) inflight() int {
	n := 0
	for _, st := range pm.st {
		n += st.inflight
	}
	return n
}

// anyLive reports whether holds is true of some connected peer we know.
// A peer not connected is gone, its state brought back by a late message:
// best would never pick it.
func (pm *peerManager) anyLive(holds func(peer.ID, *peerState) bool) bool {
	for p, st := range pm.st {
		if pm.live[p] && holds(p, st) {
			return true
		}
	}
	return false
}

// best picks, among connected peers that pass ok and have room, the one
// expected to deliver soonest: fewest outstanding blocks weighted by its
// pace, within the price we pay. Pace, not latency: a peer's latency grows
// with the wants it already has queued, so weighting those by it again
// swings wants from one peer to the other and back, and a reader waits for
// whichever fell behind. ok is asked with the time of the choice.
func (pm *peerManager) best(ok func(peer.ID, time.Time) bool) (peer.ID, bool) {
	var (
		bestP     peer.ID
		bestScore time.Duration
		found     bool
	)
	now := pm.now()
	for p, st := range pm.st {
		if !ok(p, now) || !pm.live[p] || st.inflight >= st.window(pm.limit) || now.Before(st.congested) {
			continue
		}
		if pm.maxPrice > 0 && st.price > pm.maxPrice {
			continue
		}
		per := st.pace()
		if per == 0 {
			// Never asked for more than one block at a time: its latency
			// is all there is to go by, and unmeasured, be optimistic so
			// that new peers get tried.
			per = cmp.Or(st.latency, time.Millisecond)
		}
		score := time.Duration(st.inflight+1) * per
		if !found || score < bestScore {
			bestP, bestScore, found = p, score, true
		}
	}
	return bestP, found
}

// delivered records a block we asked st's peer for, arriving at arrived
// lat after its WantBlock; its wants outstanding are already counted down.
func (st *peerState) delivered(lat time.Duration, arrived time.Time) {
	if st.latency == 0 {
		st.latency = lat
	} else {
		st.latency = (st.latency*7 + lat) / 8
	}
	st.paced(arrived)
}

// paceDecay weighs a peer's older block gaps against newer ones: about
// the last 100 blocks count, six batches of a steady sender, which keeps
// the estimate within some 8% of the truth whatever the phase of the
// current batch.
const paceDecay = 0.99

// paced records a block that came from the peer at arrived. Blocks come
// in batches and are handled out of order by the verifiers, so single gaps
// say little, but their sum over the blocks of a busy stretch is the time
// the peer took for them.
func (st *peerState) paced(arrived time.Time) {
	if st.busy {
		st.paceTime = st.paceTime*paceDecay + float64(max(arrived.Sub(st.lastBlock), 0))
		st.paceBlocks = st.paceBlocks*paceDecay + 1
	}
	if arrived.After(st.lastBlock) {
		st.lastBlock = arrived
	}
	st.busy = st.inflight > 0
}

// pace is the peer's time per block while busy; 0 until measured.
func (st *peerState) pace() time.Duration {
	if st.paceBlocks == 0 {
		return 0
	}
	return time.Duration(st.paceTime / st.paceBlocks)
}
