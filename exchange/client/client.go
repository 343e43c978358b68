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
	"cmp"
	"context"
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

// BatchStore is a Store that also keeps many blocks in one write, all of
// them or none (store.BatchStore): a verifier given several deliveries at
// once stores them with one index commit instead of one each.
type BatchStore interface {
	Store
	PutLeafBlocks(ctx context.Context, leaves []store.Leaf, blocks []store.Block) error
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
	batch BatchStore // st, when it is one; else nil
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

	// mu guards the parts below. They keep no locks of their own: a
	// scheduling pass, or a delivery, changes several at once and must
	// find them agreeing (a want outstanding at a peer holds a slot of its
	// window), and one lock has no order to get wrong.
	mu          sync.Mutex
	wants       *wantManager // the pending wants (wants.go)
	pm          *peerManager // each peer's load and pace, and the choice (peers.go)
	trees       *treeTracker // providers and lookups of each tree (trees.go)
	ledger      *ledger      // offences, asks and bans (ledger.go)
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
	opts.Window = cmp.Or(opts.Window, 64)
	opts.BlockTimeout = cmp.Or(opts.BlockTimeout, 10*time.Second)
	opts.HaveTimeout = cmp.Or(opts.HaveTimeout, 3*time.Second)
	opts.RediscoverAfter = cmp.Or(opts.RediscoverAfter, 10*time.Second)
	opts.MaxOffences = cmp.Or(opts.MaxOffences, 3)
	opts.BanFor = cmp.Or(opts.BanFor, 10*time.Minute)
	opts.Verifiers = cmp.Or(opts.Verifiers, max(2, runtime.GOMAXPROCS(0)))
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
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
	c.batch, _ = st.(BatchStore)
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
// honest link could never meet. It looks through the pending wants: a
// reader asks it when a wait has gone on, and asks Delivered, which is
// cheap, when a wait begins.
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

// Delivered is how many of tree's blocks have been delivered so far: the
// count Progress reports, without looking for who serves the tree.
func (c *Client) Delivered(tree cid.Cid) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, n := c.trees.progress(tree)
	return n
}

// GetLeaf fetches block index of the dataset tree and returns it with its
// leaf entry (proof included), once verified and stored. Wants of reads go
// before background ones (prio).
func (c *Client) GetLeaf(ctx context.Context, tree cid.Cid, index uint64, prio store.Priority) (store.Leaf, store.Block, error) {
	root, err := store.Digest(tree)
	if err != nil {
		return store.Leaf{}, store.Block{}, err
	}
	w, err := c.request(ctx, message.LeafAddress(tree, index), root, prio)
	if err != nil {
		return store.Leaf{}, store.Block{}, err
	}
	return w.leaf, w.block, nil
}

// Get fetches a block by its CID (a manifest), once verified. It is not
// stored: a manifest makes a dataset, which the node stores together with
// its record, or not at all.
func (c *Client) Get(ctx context.Context, k cid.Cid) (store.Block, error) {
	w, err := c.request(ctx, message.CIDAddress(k), merkle.Digest{}, store.Read)
	if err != nil {
		return store.Block{}, err
	}
	return w.block, nil
}

func (c *Client) request(ctx context.Context, a message.Address, root merkle.Digest, prio store.Priority) (*want, error) {
	c.mu.Lock()
	c.stats.Requests++
	w, coalesced := c.wants.add(a, root, prio == store.Read)
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

// Banned reports whether p has been dropped for misconduct and is still
// being ignored; the engine drops whatever such a peer sends.
func (c *Client) Banned(p peer.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ledger.isBanned(p, c.now())
}
