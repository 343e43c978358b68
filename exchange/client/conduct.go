package client

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
)

// A peer's conduct: which blocks it may send us, and its offences.
//
// A block is welcome from a peer as many times as we sent it a WantBlock
// for it, until lateGrace after the last: a want that timed out at a slow
// peer and was asked of it again may well come twice, and both copies are
// honest. Only a block we never asked that peer for (or more copies than
// we asked for) is an offence. Offences are forgiven, one per forgiveEvery,
// so that a long-lived honest peer is not dropped for a few mishaps spread
// over days; what bans a peer is offences close together.

// askRecord counts the WantBlocks for one block a peer has not answered.
type askRecord struct {
	n     int
	until time.Time // a delivery is welcome until then
}

// ask records a WantBlock for k sent to st; a delivery is welcome until
// until.
func (st *peerState) ask(k message.Key, until time.Time) {
	r := st.asked[k]
	r.n++
	r.until = until
	st.asked[k] = r
}

// answered takes one delivery of k off st's record and reports whether it
// was one we had asked for (and not so long ago that any answer is past
// welcome).
func (st *peerState) answered(k message.Key, now time.Time) bool {
	r, ok := st.asked[k]
	st.unask(k)
	return ok && now.Before(r.until)
}

// unask takes one WantBlock for k off st's record: answered, or never
// sent after all.
func (st *peerState) unask(k message.Key) {
	if r, ok := st.asked[k]; ok {
		if r.n--; r.n <= 0 {
			delete(st.asked, k)
		} else {
			st.asked[k] = r
		}
	}
}

// forgiveEvery is how fast offences are forgiven: one for every such
// stretch without another.
const forgiveEvery = 10 * time.Minute

// offences is a peer's count of offences not yet forgiven.
type offences struct {
	n  int
	at time.Time // forgiveness is counted from here
}

// current is the count as of now, with the forgiven ones taken off.
func (o offences) current(now time.Time) offences {
	if o.n == 0 || !now.After(o.at) {
		return o
	}
	k := int(now.Sub(o.at) / forgiveEvery)
	if k >= o.n {
		return offences{}
	}
	return offences{n: o.n - k, at: o.at.Add(time.Duration(k) * forgiveEvery)}
}

// forgiven reports whether every offence is forgiven as of now.
func (o offences) forgiven(now time.Time) bool { return o.current(now).n == 0 }

// offend counts one offence of p and drops it once MaxOffences are not
// forgiven: it is disconnected, and neither asked nor listened to until
// BanFor has passed. Callers hold mu.
func (c *Client) offend(p peer.ID, now time.Time) {
	o := c.offence[p].current(now)
	if o.n == 0 {
		o.at = now
	}
	o.n++
	c.offence[p] = o
	if o.n < c.opts.MaxOffences || c.isBanned(p, now) {
		return
	}
	c.log.Warn("exchange: dropping peer after repeated offences", "peer", p, "offences", o.n)
	c.banned[p] = now.Add(c.opts.BanFor)
	c.stats.PeersDropped++
	c.forget(p)
	go c.peers.Disconnect(p)
}
