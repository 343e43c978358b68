package client

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// How much to ask of each peer, and when a want at a peer is late: both
// follow the peer's measured pace (its time per block while busy), not
// constants, so that the same rules serve a 128 kbit/s home line and a
// 1 Gbit/s LAN.
//
// A peer's window holds what it delivers in queueTarget: enough to cover
// any round trip up to that (a window limited by the round trip delivers
// one window per round trip, which reads as a faster pace and opens the
// window further), and short enough that a block a reader waits for is
// never queued behind more than about a second of read-ahead. A fixed 64
// blocks was 33 s of queue at 1 Mbit/s, longer than a block may take.
//
// A want is late when the peer has delivered nothing at all for a
// BlockTimeout since it was sent (it stalled, or is gone), or when it
// keeps delivering others but not this one for overdueFactor times what
// the want's place in its queue should take, and at least skipAfter: the
// peer skipped it (its want was lost, or it dropped it), and may be asked
// again at once, where a stalled peer is passed over for a while. A slow
// peer that keeps delivering is never timed out for being slow.

// Two wants are the least: one arriving, the next queued behind it, so a
// slow line never idles between blocks. More is only queue: at 128 kbit/s
// four 64 KiB blocks are 16 s of it, which overflowed a home router's
// buffer and cost the whole connection TCP's backed-off retransmissions,
// tens of seconds of silence. Until the pace is known, four.
const (
	queueTarget   = time.Second
	minWindow     = 2
	startWindow   = 4 // until the pace is known
	overdueFactor = 4
	skipAfter     = time.Second
)

// window is how many WantBlocks st may have outstanding, at most limit.
func (st *peerState) window(limit int) int {
	per := st.pace()
	if per <= 0 {
		return min(startWindow, limit)
	}
	return max(min(int(queueTarget/per)+1, limit), min(minWindow, limit))
}

// overdue reports whether a want sent to p at sentAt, with pos wants
// before it there, is late enough to ask again, and whether the peer
// skipped it while delivering others (rather than going quiet).
func (pm *peerManager) overdue(p peer.ID, sentAt time.Time, pos int, now time.Time) (late, skipped bool) {
	age := now.Sub(sentAt)
	st := pm.st[p]
	if st == nil {
		return age >= pm.timeout, false
	}
	heard := sentAt
	if st.lastBlock.After(heard) {
		heard = st.lastBlock
	}
	if age >= pm.timeout && now.Sub(heard) >= pm.timeout {
		// No block for that long; bytes may still be coming. Asked only
		// here, not on every pass over every want: it takes a lock.
		if pm.heard == nil || now.Sub(pm.heard.LastHeard(p)) >= pm.timeout {
			return true, false
		}
	}
	per := st.pace()
	if per <= 0 || st.lastBlock.Before(sentAt) {
		return false, false // nothing since it was sent: not yet a skip
	}
	// Blocks come in batches, each whole only when its last byte has:
	// the want may wait for a window's worth of blocks beyond its place.
	// (Without that, a batch of four taking 16 s behind 128 kbit/s had
	// its first block taken for skipped, and asked twice.)
	due := max(time.Duration(overdueFactor*(pos+st.window(pm.limit)))*per, skipAfter)
	return age >= due, age >= due
}
