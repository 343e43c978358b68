package client

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
)

// The ledger is a peer's conduct: which blocks it may send us, its
// offences, and its ban.
//
// A block is welcome from a peer as many times as we sent it a WantBlock
// for it, until the ledger's grace after the last: a want that timed out
// at a slow peer and was asked of it again may well come twice, and both
// copies are honest. Only a block we never asked that peer for (or more
// copies than we asked for) is an offence. Offences are forgiven, one per
// forgiveEvery, so that a long-lived honest peer is not dropped for a few
// mishaps spread over days; what bans a peer is offences close together.
//
// The ledger takes the time from its callers and keeps no lock: the
// client's lock guards it with the rest.
type ledger struct {
	maxOffences int
	banFor      time.Duration
	grace       time.Duration // how long an asked block is welcome

	// Offences and bans are kept across reconnections; asks go with the
	// peer's state (forget).
	offence map[peer.ID]offences
	banned  map[peer.ID]time.Time
	asked   map[peer.ID]map[message.Key]askRecord
}

func newLedger(maxOffences int, banFor, grace time.Duration) *ledger {
	return &ledger{
		maxOffences: maxOffences, banFor: banFor, grace: grace,
		offence: map[peer.ID]offences{}, banned: map[peer.ID]time.Time{}, asked: map[peer.ID]map[message.Key]askRecord{},
	}
}

// lateGrace is how long after a WantBlock its answer is not an offence,
// however late: the want may sit behind a long queue at the peer and in
// flight after our cancel.
func lateGrace(blockTimeout time.Duration) time.Duration { return max(4*blockTimeout, time.Minute) }

// askRecord counts the WantBlocks for one block a peer has not answered.
type askRecord struct {
	n     int
	until time.Time // a delivery is welcome until then
}

// ask records a WantBlock for k sent to p at now.
func (l *ledger) ask(p peer.ID, k message.Key, now time.Time) {
	m := l.asked[p]
	if m == nil {
		m = map[message.Key]askRecord{}
		l.asked[p] = m
	}
	r := m[k]
	r.n++
	r.until = now.Add(l.grace)
	m[k] = r
}

// answered takes one delivery of k from p off the record and reports
// whether it was one we had asked for (and not so long ago that any answer
// is past welcome).
func (l *ledger) answered(p peer.ID, k message.Key, now time.Time) bool {
	r, ok := l.asked[p][k]
	l.unask(p, k)
	return ok && now.Before(r.until)
}

// unask takes one WantBlock for k off p's record: answered, or never sent
// after all.
func (l *ledger) unask(p peer.ID, k message.Key) {
	m := l.asked[p]
	if r, ok := m[k]; ok {
		if r.n--; r.n <= 0 {
			delete(m, k)
		} else {
			m[k] = r
		}
	}
}

// forget drops what p was asked, as its state goes (it disconnected, or
// was dropped): a block it sends after is unsolicited. Its offences and
// ban stay.
func (l *ledger) forget(p peer.ID) { delete(l.asked, p) }

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

// offend counts one offence of p and reports its count, and whether this
// one bans it: maxOffences not forgiven, and not banned already. A banned
// peer is neither asked nor listened to until banFor has passed; the
// caller drops it.
func (l *ledger) offend(p peer.ID, now time.Time) (n int, banned bool) {
	o := l.offence[p].current(now)
	if o.n == 0 {
		o.at = now
	}
	o.n++
	l.offence[p] = o
	if o.n < l.maxOffences || l.isBanned(p, now) {
		return o.n, false
	}
	l.banned[p] = now.Add(l.banFor)
	return o.n, true
}

// offences is p's count of offences not forgiven as of now.
func (l *ledger) offences(p peer.ID, now time.Time) int { return l.offence[p].current(now).n }

func (l *ledger) isBanned(p peer.ID, now time.Time) bool {
	until, ok := l.banned[p]
	return ok && now.Before(until)
}

// prune forgets expired bans, forgiven offences and asks past welcome.
func (l *ledger) prune(now time.Time) {
	for p, until := range l.banned {
		if !now.Before(until) {
			delete(l.banned, p)
			delete(l.offence, p)
		}
	}
	for p, o := range l.offence {
		if o.forgiven(now) && !l.isBanned(p, now) {
			delete(l.offence, p)
		}
	}
	for _, m := range l.asked {
		for k, r := range m {
			if !now.Before(r.until) {
				delete(m, k)
			}
		}
	}
}
