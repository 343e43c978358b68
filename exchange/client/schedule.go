package client

import (
	"fmt"
	"runtime"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
)

// loop schedules wants whenever something changes, and on a tick to catch
// timeouts.
func (c *Client) loop() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			c.failAll()
			return
		case <-c.wake:
			// Let the other runnable goroutines go first: a reader's
			// read-ahead adds dozens of wants at once, each waking the
			// loop, and scheduling after each would send as many
			// one-want messages, whose stream of small writes holds
			// back the first block the reader waits for.
			runtime.Gosched()
		case <-tick.C:
		}
		c.schedule()
	}
}

func (c *Client) failAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wants.each(func(w *want) {
		c.resolve(w, fmt.Errorf("fetch %s: exchange closed", w.addr))
	})
}

// schedule is one pass over the pending wants: time out what is late, send
// WantBlock to the best peer known to have a block, and WantHave to peers
// not yet asked. Messages are gathered per peer and sent after the pass.
func (c *Client) schedule() {
	now := c.now()
	out := map[peer.ID][]message.Entry{}
	var discover []cid.Cid

	c.mu.Lock()
	connected := c.peers.Connected()
	c.pm.setLive(connected)
	// Wants a reader waits on first, background ones after: they take
	// window slots first and come first in the messages, which providers
	// serve in order. Otherwise a read's first block, asked for just after
	// the read-ahead it started, waits for the whole window. A background
	// want waiting over half a BlockTimeout goes first too, so that reads
	// keeping every window full do not starve a pin's fetch until it fails.
	first := func(w *want) bool { return w.urgent || now.Sub(w.created) > c.opts.BlockTimeout/2 }
	for _, w := range c.wants.pending(first) {
		c.scheduleWant(w, now, connected, out, &discover)
	}
	if now.Sub(c.scanned) >= time.Second {
		c.scanned = now
		c.ledger.prune(now)
		c.forgetTrees(now)
	}
	c.mu.Unlock()

	for p, entries := range out {
		if !c.send(p, entries) {
			c.unsent(p, entries, now)
		}
	}
	for _, t := range discover {
		c.bg.Add(1) // on the loop, which bg counts: Close is not past Wait
		go func() {
			defer c.bg.Done()
			c.discover(t)
		}()
	}
}

// unsent undoes what schedule recorded for entries that never left: the
// wants go to other peers on the next pass (not after BlockTimeout), and p,
// whose queue is full, is passed over for HaveTimeout.
func (c *Client) unsent(p peer.ID, entries []message.Entry, now time.Time) {
	c.mu.Lock()
	c.stats.SendsRefused++
	c.sendRefused.Hit("peer", p)
	c.pm.congest(p, now.Add(c.opts.HaveTimeout))
	for _, e := range entries {
		w := c.wants.get(e.Address.Key())
		if w == nil || e.Cancel {
			continue
		}
		if e.WantType == message.WantHave {
			delete(w.askedHave, p)
			continue
		}
		if w.sentTo == p {
			w.sentTo = ""
			c.pm.release(p)
			c.ledger.unask(p, w.key)
		}
	}
	c.mu.Unlock()
	c.poke()
}

func (c *Client) scheduleWant(w *want, now time.Time, connected []peer.ID, out map[peer.ID][]message.Entry, discover *[]cid.Cid) {
	if w.sentTo != "" {
		late, skipped := c.pm.overdue(w.sentTo, w.sentAt, w.sentPos, now)
		if !late {
			return
		}
		// Try again, and tell the peer to forget it: elsewhere if the
		// peer went quiet; anywhere, itself included, if it skipped this
		// one (the cancel and the new want go in order, on one stream).
		c.log.Debug("exchange: block overdue", "addr", w.addr, "peer", w.sentTo, "skipped", skipped)
		out[w.sentTo] = append(out[w.sentTo], message.Entry{Address: w.addr, Cancel: true})
		if !skipped {
			w.slow[w.sentTo] = now
		}
		c.pm.release(w.sentTo)
		w.sentTo = ""
	}
	t := target(w.addr)
	ts := c.trees.get(t)
	if c.trees.lookAround(ts, now) {
		*discover = append(*discover, t)
	}

	// A peer that said Have: buy from the best one with room in its window.
	if p, ok := c.best(w, func(p peer.ID) bool { return w.haves[p] }); ok {
		c.sendWantBlock(w, p, now, out)
		return
	}
	// Peers that hold the dataset (they said Have for other blocks of the
	// tree, or announced it) are asked for the block straight away, with
	// send-dont-have so a gap costs one round trip and not a timeout.
	if p, ok := c.best(w, func(p peer.ID) bool { return c.pm.holds(p, t) }); ok {
		c.sendWantBlock(w, p, now, out)
		return
	}
	// Otherwise ask who has it: the tree's providers, else everyone we are
	// connected to (the seed's WantHave → BlockPresence step).
	asked := 0
	for _, p := range ts.askable(connected) {
		if w.dontHaves[p] || c.ledger.isBanned(p, now) || c.pm.isCongested(p, now) {
			continue
		}
		if w.haves[p] || c.pm.holds(p, t) {
			// A holder we could not use above has its window full: it
			// gets the WantBlock when a slot frees. Asking it WantHave
			// meanwhile would only cost a presence round trip per block.
			continue
		}
		if at, ok := w.askedHave[p]; ok {
			if now.Sub(at) < c.opts.HaveTimeout {
				asked++
			}
			continue
		}
		w.askedHave[p] = now
		out[p] = append(out[p], message.Entry{Address: w.addr, WantType: message.WantHave, SendDontHave: true})
		asked++
	}
	if asked > 0 || ts.discovering || c.anyHolder(w, t, now) {
		return
	}
	switch c.trees.nobodyLeft(ts, w.created, now) {
	case giveUp:
		c.resolve(w, fmt.Errorf("fetch %s: %w: no peer has it", w.addr, ErrNotFound))
	case lookUp:
		*discover = append(*discover, t)
	case keepWaiting:
	}
}

// anyHolder reports whether some usable peer may still deliver w: it said
// Have for it, or holds its dataset, and has not said DontHave for it.
func (c *Client) anyHolder(w *want, t cid.Cid, now time.Time) bool {
	return c.pm.anyLive(func(p peer.ID, st *peerState) bool {
		if w.dontHaves[p] || c.ledger.isBanned(p, now) {
			return false
		}
		return w.haves[p] || st.haveTrees[t] || !w.slow[p].IsZero()
	})
}

// best picks the peer for w among those pick accepts: see
// peerManager.best. Passed over are those that said DontHave, are banned,
// or let a WantBlock for w time out less than a BlockTimeout ago.
func (c *Client) best(w *want, pick func(peer.ID) bool) (peer.ID, bool) {
	return c.pm.best(func(p peer.ID, now time.Time) bool {
		if !pick(p) || w.dontHaves[p] || c.ledger.isBanned(p, now) {
			return false
		}
		at := w.slow[p]
		return at.IsZero() || now.Sub(at) >= c.opts.BlockTimeout
	})
}

func (c *Client) sendWantBlock(w *want, p peer.ID, now time.Time, out map[peer.ID][]message.Entry) {
	w.sentTo, w.sentAt = p, now
	w.sentPos = c.pm.take(p)
	c.ledger.ask(p, w.key, now)
	out[p] = append(out[p], message.Entry{Address: w.addr, WantType: message.WantBlock, SendDontHave: true})
}

// send hands entries to p's queue without waiting; it reports whether they
// were queued.
func (c *Client) send(p peer.ID, entries []message.Entry) bool {
	if err := c.snd.TrySend(p, &message.Message{WantList: message.WantList{Entries: entries}}); err != nil {
		c.log.Debug("exchange: want not sent", "peer", p, "err", err)
		return false
	}
	var haves, blocks uint64
	for _, e := range entries {
		switch {
		case e.Cancel:
		case e.WantType == message.WantHave:
			haves++
		default:
			blocks++
		}
	}
	c.mu.Lock()
	c.stats.WantHavesSent += haves
	c.stats.WantBlocksSent += blocks
	c.mu.Unlock()
	return true
}

// forgetTrees drops what is known of trees idle past treeIdle, and the
// peers' word that they hold them: what a node once read does not stay in
// memory for as long as it runs. Callers hold mu.
func (c *Client) forgetTrees(now time.Time) {
	active := map[cid.Cid]bool{}
	c.wants.each(func(w *want) { active[target(w.addr)] = true })
	for _, t := range c.trees.prune(now, func(t cid.Cid) bool { return active[t] }) {
		c.pm.forgetTree(t)
	}
}
