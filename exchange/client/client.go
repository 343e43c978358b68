// Package client is the fetching half of the block exchange: the seed's
// download flow from "RequestBlock" to "Resolve Block". Callers ask for
// blocks; the client coalesces duplicate asks into one pending want, finds
// peers (providers of the dataset's tree through discovery, else the peers
// we are connected to), asks them WantHave, picks the best peer that has
// the block by price, load and speed, asks it WantBlock, verifies what
// arrives against the tree root, stores it, and wakes every waiter. Many
// wants are in flight at once, spread over several providers; a peer that
// does not answer in time, or says it lacks the block, or sends bad bytes,
// is passed over for another.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/limit"
	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// Sender delivers messages to peers. TrySend must not block: the client
// sends from its one scheduling goroutine, and a peer that does not read
// must not stall the wants of every other peer.
type Sender interface {
	TrySend(p peer.ID, m *message.Message) error
	// LastHeard is when bytes last came from p, part of a message or a
	// whole one (the zero time if never): a peer sending a large batch
	// down a slow line is busy, not silent, long before its blocks are
	// whole.
	LastHeard(p peer.ID) time.Time
}

// Discoverer finds the providers of a tree or manifest CID.
type Discoverer interface {
	FindProviders(ctx context.Context, c cid.Cid) ([]peer.AddrInfo, error)
}

// Peers connects to peers and lists the connected ones.
type Peers interface {
	Connect(ctx context.Context, ai peer.AddrInfo) error
	Connected() []peer.ID
	// Disconnect drops a misbehaving peer.
	Disconnect(p peer.ID)
}

// Store keeps verified dataset blocks, each with its leaf.
type Store interface {
	PutLeafBlock(ctx context.Context, l store.Leaf, b store.Block) error
}

// ErrNotFound is wrapped when no peer could provide a block before the
// caller's deadline; it also wraps store.ErrNotFound so that callers that
// only know the store's error treat both alike.
var ErrNotFound = fmt.Errorf("no peer provided the block: %w", store.ErrNotFound)

// Options tune the client; zero values take the defaults.
type Options struct {
	// Window is the most WantBlocks outstanding at one peer (default 64
	// blocks: 4 MiB of 64 KiB blocks, enough to fill a 200 Mbit/s link
	// with 100 ms of round trip); each peer's own window follows its pace
	// below that (window.go).
	Window int
	// BlockTimeout is how long a peer may go without delivering anything
	// while it has a want of ours before the want goes to another peer
	// (default 10s); a peer that keeps delivering has longer (window.go).
	BlockTimeout time.Duration
	// HaveTimeout is how long to wait for presence answers before asking
	// more peers or discovering again (default 3s).
	HaveTimeout time.Duration
	// RediscoverAfter spaces DHT lookups for one CID (default 10s).
	RediscoverAfter time.Duration
	// MaxPrice is the most we pay per block; peers quoting more are not
	// asked for blocks (0: any price).
	MaxPrice uint64
	// MaxOffences is how many offences a peer may commit before it is
	// dropped and ignored (default 3). An offence is a block that fails
	// verification, or a block we never asked that peer for (see
	// ledger.go); the count survives reconnections and decays with time.
	MaxOffences int
	// BanFor is how long a dropped peer is ignored (default 10 minutes).
	BanFor time.Duration
	// Verifiers is how many delivered blocks are hashed, checked against
	// their proofs and stored at once (default GOMAXPROCS, at least 2).
	Verifiers int
	// ObserveLatency, when set, is told how long each delivered block took
	// from its WantBlock (for metrics); it must not block.
	ObserveLatency func(time.Duration)
	Logger         *slog.Logger
	// Clock, when set, is the time wants age and peers are timed by
	// (default the wall clock): tests drive it to reach an age without
	// waiting for it.
	Clock func() time.Time
}

// Client fetches blocks from peers.
type Client struct {
	snd   Sender
	disc  Discoverer
	peers Peers
	st    Store
	opts  Options
	log   *slog.Logger
	// now is the one clock of the client and all its parts: Options.Clock,
	// or the wall clock.
	now func() time.Time

	ctx     context.Context
	cancel  context.CancelFunc
	wake    chan struct{}
	verifyQ chan delivery
	// bg counts the loop, the verifiers and discoveries: Close waits.
	bg sync.WaitGroup

	mu          sync.Mutex
	wants       *wantManager
	pm          *peerManager
	trees       *treeTracker
	ledger      *ledger
	stats       Stats
	scanned     time.Time       // last prune of bans and asked records
	sendRefused *limit.Reporter // want lists a peer's full queue refused
}

// Stats counts what the client has done.
type Stats struct {
	BlocksReceived, BytesReceived, BadBlocks, Unwanted, DuplicateBlocks uint64
	// Unsolicited counts blocks for nothing we had asked their sender for
	// (each an offence); Unwanted counts the late ones we had asked for
	// and no longer need (no offence); PeersDropped counts bans.
	Unsolicited, PeersDropped uint64
	Requests, Coalesced       uint64
	// SendsRefused counts want lists not sent because the peer's queue
	// was full: the peer is passed over for a while.
	SendsRefused uint64
	// The protocol steps: WantHave and WantBlock entries sent, and the
	// Have and DontHave answers received.
	WantHavesSent, WantBlocksSent, HavesReceived, DontHavesReceived uint64
	// InFlight is the WantBlocks outstanding now, over all peers.
	InFlight   int
	BlocksFrom map[peer.ID]uint64
}

// New starts a client; Close stops it.
func New(snd Sender, disc Discoverer, peers Peers, st Store, opts Options) *Client {
	if opts.Window <= 0 {
		opts.Window = 64
	}
	if opts.BlockTimeout <= 0 {
		opts.BlockTimeout = 10 * time.Second
	}
	if opts.HaveTimeout <= 0 {
		opts.HaveTimeout = 3 * time.Second
	}
	if opts.RediscoverAfter <= 0 {
		opts.RediscoverAfter = 10 * time.Second
	}
	if opts.MaxOffences <= 0 {
		opts.MaxOffences = 3
	}
	if opts.BanFor <= 0 {
		opts.BanFor = 10 * time.Minute
	}
	if opts.Verifiers <= 0 {
		opts.Verifiers = max(2, runtime.GOMAXPROCS(0))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	now := opts.Clock
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		snd: snd, disc: disc, peers: peers, st: st, opts: opts, log: opts.Logger, now: now,
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1),
		// A window's worth of deliveries may wait (64 blocks, 4 MiB of
		// 64 KiB ones): a whole batch is handed over at once and the
		// stream reader goes back to the next message; beyond that it
		// waits, and the peer's stream with it.
		verifyQ:     make(chan delivery, 64),
		wants:       newWantManager(now),
		pm:          newPeerManager(now, snd, opts),
		ledger:      newLedger(opts.MaxOffences, opts.BanFor, lateGrace(opts.BlockTimeout)),
		trees:       newTreeTracker(now, opts.RediscoverAfter),
		stats:       Stats{BlocksFrom: map[peer.ID]uint64{}},
		sendRefused: limit.New(opts.Logger, "want_send_refused", "messages queued to one peer (its send queue)"),
	}
	c.bg.Add(1 + opts.Verifiers)
	go func() {
		defer c.bg.Done()
		c.loop()
	}()
	for range opts.Verifiers {
		go func() {
			defer c.bg.Done()
			c.verifier()
		}()
	}
	return c
}

// Close stops the client and waits for its goroutines: pending requests
// fail, and once it returns no delivery is being stored, so the store may
// be closed.
func (c *Client) Close() {
	c.cancel()
	c.bg.Wait()
}

// Stats returns a copy of the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.BlocksFrom = make(map[peer.ID]uint64, len(c.stats.BlocksFrom))
	for p, n := range c.stats.BlocksFrom {
		s.BlocksFrom[p] = n
	}
	s.InFlight = c.pm.inflight()
	return s
}

// Progress tells a waiting reader whether the exchange is getting anywhere
// with tree: when a peer that has wants of the tree outstanding was last
// heard from (bytes of any message count: a large block on a slow line is
// arriving long before it is whole), and how many of the tree's blocks have
// been delivered so far. A reader waits on while the peers serving it are
// heard from, and gives up on silence, not on a fixed deadline that a slow
// honest link could never meet.
func (c *Client) Progress(tree cid.Cid) (heard time.Time, delivered uint64) {
	c.mu.Lock()
	heard, delivered = c.trees.progress(tree)
	serving := c.wants.serving(tree)
	c.mu.Unlock()
	for _, p := range serving {
		if at := c.snd.LastHeard(p); at.After(heard) {
			heard = at
		}
	}
	return heard, delivered
}

// GetLeaf fetches block index of the dataset tree and returns it with its
// leaf entry (proof included), once verified and stored.
func (c *Client) GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (store.Leaf, store.Block, error) {
	root, err := store.Digest(tree)
	if err != nil {
		return store.Leaf{}, store.Block{}, err
	}
	w, err := c.request(ctx, message.LeafAddress(tree, index), root)
	if err != nil {
		return store.Leaf{}, store.Block{}, err
	}
	return w.leaf, w.block, nil
}

// Get fetches a block by its CID (a manifest), once verified. It is not
// stored: a manifest makes a dataset, which the node stores together with
// its record, or not at all.
func (c *Client) Get(ctx context.Context, k cid.Cid) (store.Block, error) {
	w, err := c.request(ctx, message.CIDAddress(k), merkle.Digest{})
	if err != nil {
		return store.Block{}, err
	}
	return w.block, nil
}

func (c *Client) request(ctx context.Context, a message.Address, root merkle.Digest) (*want, error) {
	c.mu.Lock()
	c.stats.Requests++
	w, coalesced := c.wants.add(a, root, !store.IsBackground(ctx))
	if coalesced {
		c.stats.Coalesced++
	}
	c.mu.Unlock()
	c.poke()

	select {
	case <-w.done:
		if w.err != nil {
			c.abandon(w)
			return nil, w.err
		}
		return w, nil
	case <-ctx.Done():
		c.abandon(w)
		return nil, fmt.Errorf("fetch %s: %w (%w)", a, ErrNotFound, ctx.Err())
	case <-c.ctx.Done():
		return nil, fmt.Errorf("fetch %s: exchange closed", a)
	}
}

// abandon drops one waiter; the last one cancels the want at the peer.
func (c *Client) abandon(w *want) {
	c.mu.Lock()
	cancelAt := c.wants.abandon(w)
	if cancelAt != "" {
		c.pm.release(cancelAt)
	}
	c.mu.Unlock()
	if cancelAt != "" {
		// Best effort, never blocking the caller who gave up.
		c.send(cancelAt, []message.Entry{{Address: w.addr, Cancel: true}})
	}
}

func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

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

// Banned reports whether p has been dropped for misconduct and is still
// being ignored; the engine drops whatever such a peer sends.
func (c *Client) Banned(p peer.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ledger.isBanned(p, c.now())
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

// delivery is a block a peer sent, waiting for a verifier.
type delivery struct {
	from peer.ID
	d    message.Delivery
}

// HandleBlocks hands the blocks p delivered to the verifiers, which check,
// store and hand them out. It blocks while they are all busy and their
// queue is full: the caller is p's stream reader, so a peer sending faster
// than we can hash and store is slowed by its own stream's flow control,
// and what waits here is bounded. Meanwhile the reader is free to read the
// next message, so hashing and storing overlap the transfer instead of
// stopping it for every batch.
func (c *Client) HandleBlocks(p peer.ID, ds []message.Delivery) {
	for _, d := range ds {
		select {
		case c.verifyQ <- delivery{p, d}:
		case <-c.ctx.Done():
			return
		}
	}
}

// verifier checks and stores deliveries until the client closes.
func (c *Client) verifier() {
	for {
		select {
		case j := <-c.verifyQ:
			c.handleBlock(j.from, j.d)
			c.poke()
		case <-c.ctx.Done():
			return
		}
	}
}

func (c *Client) handleBlock(p peer.ID, d message.Delivery) {
	key := d.Address.Key()
	now := c.now()
	c.mu.Lock()
	if c.ledger.isBanned(p, now) {
		c.mu.Unlock() // the rest of a banned peer's message is ignored
		return
	}
	w := c.wants.get(key)
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
		c.mu.Unlock()
		return
	}
	root := w.root
	c.mu.Unlock()

	leaf, block, err := verify(d, root)
	if err == nil {
		// Stored before waiters are woken: whoever reads next finds it
		// locally. Peers only ever cause blocks we asked for to be stored.
		err = c.keep(leaf, block)
		if err != nil {
			c.log.Warn("exchange: storing a fetched block failed", "addr", d.Address, "err", err)
		}
	} else {
		c.log.Warn("exchange: peer sent a bad block", "peer", p, "addr", d.Address, "err", err)
	}

	var cancelAt peer.ID
	defer func() {
		if cancelAt != "" {
			c.send(cancelAt, []message.Entry{{Address: w.addr, Cancel: true}})
		}
	}()
	c.mu.Lock()
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

func (c *Client) keep(leaf store.Leaf, b store.Block) error {
	if !leaf.Tree.Defined() {
		return nil // a manifest: see Get
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	return c.st.PutLeafBlock(ctx, leaf, b)
}

// errBadBlock marks deliveries that fail verification: the peer's fault.
var errBadBlock = errors.New("bad block")

// verify checks a delivery before anything of it is trusted: its bytes hash
// to its CID, and for a dataset block the proof ties that hash to the tree
// root at exactly the index we asked for.
func verify(d message.Delivery, root merkle.Digest) (store.Leaf, store.Block, error) {
	if d.CID.Type() != store.CodecBlock && d.CID.Type() != store.CodecManifest {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: codec %s", errBadBlock, store.CodecName(d.CID.Type()))
	}
	// NewBlock hashes the bytes as sha2-256 whatever hash the peer's CID
	// names, and the store then takes the block without hashing it again.
	b := store.NewBlock(d.CID.Type(), d.Data)
	if !b.CID.Equals(d.CID) {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: bytes do not hash to %s", errBadBlock, store.CIDText(d.CID))
	}
	sum, err := store.Digest(b.CID)
	if err != nil {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: %w", errBadBlock, err)
	}
	if !d.Address.Leaf {
		if !d.Address.CID.Equals(d.CID) {
			return store.Leaf{}, store.Block{}, fmt.Errorf("%w: delivered %s for %s", errBadBlock, store.CIDText(d.CID), d.Address)
		}
		return store.Leaf{}, b, nil
	}
	if d.CID.Type() != store.CodecBlock {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: dataset block with codec %s", errBadBlock, store.CodecName(d.CID.Type()))
	}
	proof, err := merkle.UnmarshalProof(d.Proof)
	if err != nil {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: proof: %w", errBadBlock, err)
	}
	if uint64(proof.Index) != d.Address.Index {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: proof is for index %d, not %d", errBadBlock, proof.Index, d.Address.Index)
	}
	if err := proof.Verify(sum, root); err != nil {
		return store.Leaf{}, store.Block{}, fmt.Errorf("%w: %w", errBadBlock, err)
	}
	// Stored as we encode the proof just verified, not as the peer's bytes,
	// which may carry fields the proof does not (and any length the wire
	// allows).
	return store.Leaf{Tree: d.Address.Tree, Index: d.Address.Index, Block: d.CID, Proof: proof.Marshal()}, b, nil
}

// PeerGone forgets what a disconnected peer had or was doing.
func (c *Client) PeerGone(p peer.ID) {
	c.mu.Lock()
	c.forget(p)
	c.mu.Unlock()
	c.poke()
}
