package client

import (
	"errors"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// HandlePresences records what p says it has.
func (c *Client) HandlePresences(p peer.ID, ps []message.Presence) {
	c.mu.Lock()
	if c.ledger.isBanned(p, c.now()) {
		c.mu.Unlock()
		return
	}
	for _, pr := range ps {
		w := c.wants.get(pr.Address.Key())
		if pr.Type == message.Have {
			c.stats.HavesReceived++
		} else {
			c.stats.DontHavesReceived++
		}
		// What we do not want (now, or any more) keeps nothing: a peer
		// may say Have for any number of trees.
		t := target(pr.Address)
		if w == nil && !c.trees.known(t) {
			continue
		}
		st := c.pm.get(p)
		if pr.Type == message.Have {
			st.haveTrees[t] = true
			if price, ok := message.PriceUint64(pr.Price); ok {
				st.price = price
			}
		}
		if w == nil {
			continue
		}
		switch pr.Type {
		case message.Have:
			w.haves[p] = true
		case message.DontHave:
			w.dontHaves[p] = true
			delete(w.haves, p)
			if w.sentTo == p {
				w.sentTo = ""
				c.pm.release(p)
			}
		}
	}
	c.mu.Unlock()
	c.poke()
}

// checked is a delivery that answers a want, through verify.
type checked struct {
	delivery
	w     *want
	now   time.Time
	leaf  store.Leaf
	block store.Block
	tree  cid.Cid // of a verified manifest, else cid.Undef
	err   error
}

// handleBlocks verifies a verifier's deliveries, stores those that pass
// and are still wanted in one write (keepAll), then hands each out.
// Stored before waiters are woken: whoever reads next finds it locally.
// Peers only ever cause blocks we asked for to be stored.
func (c *Client) handleBlocks(ds []delivery) {
	batch := make([]checked, 0, len(ds))
	for _, j := range ds {
		w, now, ok := c.accept(j.from, j.d)
		if !ok {
			continue
		}
		k := checked{delivery: j, w: w, now: now}
		// A want's root is set when it is made, and never changes.
		k.leaf, k.block, k.err = verify(j.d, w.root)
		k.tree = manifestTree(k.leaf, k.block, k.err)
		if k.err != nil {
			c.log.Warn("exchange: peer sent a bad block", "peer", j.from, "addr", j.d.Address, "err", k.err)
		}
		batch = append(batch, k)
	}
	c.keepAll(batch)
	for i := range batch {
		c.finish(&batch[i])
	}
}

// accept finds the want a delivery from p answers. A delivery that answers
// none is dropped, and an offence unless p had been asked for it.
func (c *Client) accept(p peer.ID, d message.Delivery) (w *want, now time.Time, ok bool) {
	key := d.Address.Key()
	now = c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ledger.isBanned(p, now) {
		return nil, now, false // the rest of a banned peer's message is ignored
	}
	w = c.wants.get(key)
	if w == nil || w.resolved {
		// Nothing pending: never stored. If we had asked p for it, it is a
		// late answer (we cancelled, timed out, or got it elsewhere). If
		// not, p is pushing blocks nobody asked for, which costs us
		// bandwidth and hashing: an offence.
		c.pm.get(p) // a peer's state, once known, goes only with forget
		if c.ledger.answered(p, key, now) {
			c.stats.Unwanted++
		} else {
			c.stats.Unsolicited++
			c.log.Warn("exchange: peer sent a block nobody asked it for", "peer", p, "addr", d.Address)
			c.offend(p, now)
		}
		return nil, now, false
	}
	return w, now, true
}

// finish settles the want k answers: the sender's load and pace, its
// offence if the block was bad, and the want resolved for every waiter.
func (c *Client) finish(k *checked) {
	p, w, now, err, leaf, block, tree := k.from, k.w, k.now, k.err, k.leaf, k.block, k.tree
	key := k.d.Address.Key()
	c.mu.Lock()
	if c.ledger.isBanned(p, now) {
		// Banned by a block before this one: the rest of its message is
		// ignored, as it would have been had it come alone.
		c.mu.Unlock()
		return
	}
	var cancelAt peer.ID
	defer func() {
		if cancelAt != "" {
			c.send(cancelAt, []message.Entry{{Address: w.addr, Cancel: true}})
		}
	}()
	defer c.mu.Unlock()
	st := c.pm.get(p)
	c.ledger.answered(p, key, now)
	if w.sentTo == p {
		c.pm.release(p)
		if err == nil {
			lat := c.now().Sub(w.sentAt)
			if c.opts.ObserveLatency != nil {
				c.opts.ObserveLatency(lat)
			}
			st.delivered(lat, now)
		}
		w.sentTo = ""
	}
	if errors.Is(err, errBadBlock) {
		c.stats.BadBlocks++
		w.dontHaves[p] = true
		delete(w.haves, p)
		c.offend(p, now)
		return
	}
	if w.resolved {
		c.stats.DuplicateBlocks++
		return
	}
	if w.sentTo != "" && err == nil {
		// Another peer was asked for it and is still sending: tell it to
		// stop. Its copy, if already on the way, is a late answer.
		cancelAt = w.sentTo
	}
	c.stats.BlocksReceived++
	c.stats.BytesReceived += uint64(len(block.Data))
	c.stats.BlocksFrom[p]++
	st.haveTrees[target(w.addr)] = true
	if tree.Defined() {
		st.haveTrees[tree] = true
		c.trees.get(tree) // so that it is forgotten once idle, as others are
	}
	c.trees.delivered(target(w.addr), now)
	w.leaf, w.block = leaf, block
	c.resolve(w, err)
}

// forget drops what we know of p: its presences, the wants sent to it
// (they go elsewhere on the next pass), its trees, its state. Its offence
// count stays. Callers hold mu.
func (c *Client) forget(p peer.ID) {
	c.wants.forget(p)
	c.trees.forget(p)
	c.pm.remove(p)
	c.ledger.forget(p)
}

// offend counts an offence of p and drops p once the ledger bans it: it
// is forgotten and disconnected. Callers hold mu.
func (c *Client) offend(p peer.ID, now time.Time) {
	n, banned := c.ledger.offend(p, now)
	if !banned {
		return
	}
	c.log.Warn("exchange: dropping peer after repeated offences", "peer", p, "offences", n)
	c.stats.PeersDropped++
	c.forget(p)
	go c.peers.Disconnect(p)
}

// resolve completes w for every waiter. Callers hold mu.
func (c *Client) resolve(w *want, err error) {
	if held := c.wants.resolve(w, err); held != "" {
		c.pm.release(held)
	}
}

// PeerGone forgets what a disconnected peer had or was doing.
func (c *Client) PeerGone(p peer.ID) {
	c.mu.Lock()
	c.forget(p)
	c.mu.Unlock()
	c.poke()
}

// manifestTree is the tree of a verified manifest block, else cid.Undef.
// The peer that delivers a manifest almost always holds its dataset: taken
// as a holder of the tree, it is asked for the first block straight away
// (WantBlock with SendDontHave) instead of after a WantHave round trip,
// which a cold open paid every time (about 1 ms of the 3 ms of a mount's
// first read here). Should it not hold the tree, its DontHave sends the
// want to the others, one round trip later, as before.
func manifestTree(leaf store.Leaf, b store.Block, err error) cid.Cid {
	if err != nil || leaf.Tree.Defined() || b.CID.Prefix().Codec != store.CodecManifest {
		return cid.Undef
	}
	m, err := manifest.FromBlock(b)
	if err != nil {
		return cid.Undef
	}
	return m.TreeCID
}
