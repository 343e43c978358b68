// Package node wires meshfs together: the block store, the node's identity,
// uploads and dataset retrieval. It is the only package that knows every
// part; the API, the CLI and the mount talk to it through small interfaces of
// their own.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfs/meshfs/exchange"
	"github.com/meshfs/meshfs/exchange/discovery"
	"github.com/meshfs/meshfs/exchange/p2p"
	"github.com/meshfs/meshfs/node/dataset"
	"github.com/meshfs/meshfs/node/fetch"
	"github.com/meshfs/meshfs/node/metrics"
	"github.com/meshfs/meshfs/node/offer"
	"github.com/meshfs/meshfs/node/retention"
	"github.com/meshfs/meshfs/node/upload"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/erasure"
	"github.com/meshfs/meshfs/store/manifest"
	"github.com/meshfs/meshfs/store/merkle"
	"github.com/meshfs/meshfs/store/repo"
)

// Config holds a node's settings; zero values take the defaults below.
type Config struct {
	DataDir    string
	QuotaBytes uint64 // 0: unlimited
	// BlockSize forces the block size of every upload; 0: automatic, each
	// upload's chosen by upload.BlockSizeFor (64 KiB, less for a small
	// protected file), unless the upload forces its own.
	BlockSize uint64
	EcK, EcM  int // EcM 0 stores datasets unprotected
	// Listen are libp2p multiaddrs; empty listens on an ephemeral loopback
	// TCP port (the CLI passes its own defaults).
	Listen []string
	// Bootstrap are the peers (multiaddrs ending in /p2p/<id>) the node
	// joins the network through; nobody else is dialled on our initiative,
	// but for the nodes MDNS finds on the LAN.
	Bootstrap []string
	// MDNS: find and be found by meshfs nodes on the LAN (p2p.Config.MDNS).
	MDNS bool
	// Relays (multiaddrs ending in /p2p/<id>) are the circuit relays the
	// node reserves a slot on when it is behind a NAT; empty: those of the
	// Bootstrap peers that serve as relays.
	Relays []string
	// RelayService, PortMap and Reachability: see p2p.NATConfig.
	RelayService bool
	PortMap      bool
	Reachability string
	// FetchTimeout bounds finding a block nobody local has (default 30s).
	FetchTimeout time.Duration
	// Exchange tunes the block exchange (tests shorten its timeouts).
	Exchange exchange.Options
	// BandwidthUp and BandwidthDown cap the block exchange's traffic to
	// and from all peers, bytes per second (0: no cap).
	BandwidthUp, BandwidthDown int64
	// Discovery tunes provider announcements and lookups.
	Discovery discovery.Options
	// CacheTTL: a cached dataset (one that came from the network, not
	// pinned) that nobody has read for this long is garbage collected.
	// 0: never by age (the daemon's default is 24h).
	CacheTTL time.Duration
	// GCInterval: how often garbage is collected in the background; 0:
	// only on demand (GC) and when the store is full (the daemon's
	// default is a minute).
	GCInterval time.Duration
	// Clock is the time retention records are stamped and aged with
	// (nil: time.Now); tests pass a clock they move by hand.
	Clock  func() time.Time
	Logger *slog.Logger
}

// Defaults. K=4, M=2 survives the loss of any two blocks of a codeword for
// 50% overhead; with the stepped layout that is any run of 2×steps lost
// consecutive blocks. DefaultBlockSize is what an automatic block size
// (Config.BlockSize 0) is but for small protected files.
const (
	DefaultBlockSize = upload.DefaultBlockSize
	DefaultEcK       = 4
	DefaultEcM       = 2
)

// Node is one meshfs storage node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	store  store.BlockStore    // local
	net    *store.NetworkStore // local, then peers
	id     peer.ID
	host   *p2p.Host
	disc   *discovery.Discovery
	engine *exchange.Engine
	ctx    context.Context // lives until Close: background fetches, announcements
	cancel context.CancelFunc
	fetch  *fetch.Fetches // background copies of whole datasets
	offers *offer.Offers  // what the node tells the network it provides
	// leaves reads held blocks in place, for every reader: the local
	// store's, not the network store's, which cannot.
	leaves store.LeafReader
	blocks *dataset.Cache // recently fetched blocks, for every dataset
	up     *upload.Uploader

	metrics *metrics.Registry
	reads   dataset.Counters

	// Retention and garbage collection: see package retention.
	ret  store.RetentionStore
	keep *retention.Keeper
	full store.BlockStore // the local store, collecting when it is full
	bg   sync.WaitGroup   // the collection loop
}

// New opens (or creates) the node's repository in cfg.DataDir, starts its
// libp2p host, DHT and block exchange, and announces the datasets it holds.
func New(cfg Config) (n *Node, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data dir")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.FetchTimeout = cmp.Or(cfg.FetchTimeout, 30*time.Second)
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	bootstrap, err := parsePeers("bootstrap", cfg.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	relays, err := parsePeers("relay", cfg.Relays)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if cfg.BlockSize > manifest.MaxBlockSize || cfg.BlockSize%64 != 0 {
		return nil, fmt.Errorf("node: block size %d: want a multiple of 64 up to %d, the largest block a peer can send", cfg.BlockSize, manifest.MaxBlockSize)
	}
	if cfg.EcM > 0 {
		if _, err := erasure.NewCoder(cfg.EcK, cfg.EcM); err != nil {
			return nil, fmt.Errorf("node: erasure coding K=%d M=%d: %w", cfg.EcK, cfg.EcM, err)
		}
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "identity.key"))
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("node: peer id: %w", err)
	}
	st, err := repo.Open(filepath.Join(cfg.DataDir, "repo"), repo.Options{QuotaBytes: cfg.QuotaBytes, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n = &Node{cfg: cfg, log: cfg.Logger, store: st, leaves: st, id: id, ret: st}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.keep = n.newKeeper()
	n.full = store.Reclaiming(st, n.keep)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.host, err = p2p.New(n.ctx, p2p.Config{Key: key, Listen: cfg.Listen, Bootstrap: bootstrap, MDNS: cfg.MDNS, NAT: p2p.NATConfig{
		Relays: relays, RelayService: cfg.RelayService, PortMap: cfg.PortMap, Reachability: cfg.Reachability,
	}, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	dopts := cfg.Discovery
	dopts.Logger = cfg.Logger
	n.disc = discovery.New(n.host.DHT(), n.host.Host(), dopts)
	n.disc.Start(n.ctx)
	n.offers = offer.New(offer.Config{Discovery: n.disc, Store: st, Life: n.ctx, Logger: cfg.Logger})
	n.metrics = metrics.New()
	xopts := cfg.Exchange
	xopts.Logger = cfg.Logger
	xopts.Network.UpBytesPerSec, xopts.Network.DownBytesPerSec = cfg.BandwidthUp, cfg.BandwidthDown
	xopts.Client.ObserveLatency = n.metrics.ObserveLatency
	// Blocks served to peers are read into buffers reused once sent.
	xopts.Server.Loader = st
	// Blocks from peers, blocks rebuilt by decoding and uploads are all
	// written through n.full, so a full store makes room by collecting.
	n.engine = exchange.New(n.host.Host(), n.full, n.disc, xopts)
	n.net = store.NewNetworkStore(n.full, n.engine)
	n.metrics.Register(metrics.Sources{
		Exchange: n.engine, Peers: func() int { return len(n.Peers()) }, Store: n.store, Reads: &n.reads,
		GC: func() metrics.GC {
			s := n.keep.Stats()
			return metrics.GC{Runs: s.Runs, Datasets: s.Datasets, Bytes: s.Bytes}
		},
	})
	n.fetch = fetch.New(fetch.Config{
		Open: n.Open,
		// Not collected while it is fetched; what it stores is held
		// until it ends, whatever readers come and go.
		Hold: func(c, tree cid.Cid) func() {
			inUse, releaseTree := n.keep.AddUse(c), n.keep.AddTreeHold(tree)
			return func() { releaseTree(); inUse() }
		},
		Whole: func(ctx context.Context, c cid.Cid, m *manifest.Manifest) error {
			return offer.Whole(ctx, st, c, m)
		},
		Fetched: func(c, tree cid.Cid) { n.offers.Announce(c, tree) },
		Life:    n.ctx, Logger: n.log,
	})
	n.blocks = dataset.NewCache(blockCacheBytes)
	// An upload's trees are held against the node's sweeps until its
	// manifest is committed with its pinned record (commitUpload).
	n.up, err = upload.New(upload.Config{
		Store: n.full, BlockSize: cfg.BlockSize, EcK: cfg.EcK, EcM: cfg.EcM,
		HoldTree: n.holdTree, SweepTree: n.sweepTree, Commit: n.commitUpload, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}

	// Before anything reads or writes: what a crash or an earlier version
	// left is set right, and what no dataset needs is freed.
	if err := n.keep.Reconcile(n.ctx); err != nil {
		return nil, fmt.Errorf("node: check the store's datasets: %w", err)
	}
	entries, err := n.List(n.ctx)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	// Announced in the background, Concurrency at a time: start-up waited
	// for every provide, two per dataset, so a node holding thousands of
	// small files took seconds per thousand to start, and one whose peers
	// did not answer took a ProvideTimeout per round of them.
	var held []cid.Cid
	for _, e := range entries {
		held = append(held, e.CID, e.Manifest.TreeCID)
	}
	n.offers.Soon(held...)
	if cfg.GCInterval > 0 {
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			n.keep.Run(n.ctx, cfg.GCInterval)
		}()
	}
	return n, nil
}

// Close stops the network side, then releases the repository.
func (n *Node) Close() error {
	n.cancel()
	if n.engine != nil {
		n.engine.Close()
	}
	if n.host != nil {
		if err := n.host.Close(); err != nil {
			n.log.Warn("close libp2p host", "err", err)
		}
	}
	if n.fetch != nil {
		n.fetch.Wait()
	}
	n.bg.Wait()
	if n.offers != nil {
		n.offers.Close()
	}
	return n.store.Close()
}

func parsePeers(what string, addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return nil, fmt.Errorf("%s address %q: %w", what, a, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// ID is the node's peer ID, derived from its persistent key.
func (n *Node) ID() peer.ID { return n.id }

// DataDir is where the node keeps its state.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Upload stores r as a dataset with the node's erasure parameters and
// block size (see Config.BlockSize), pins it, and returns the manifest
// CID. A full store makes room by collecting cached datasets. It returns
// once the dataset is committed; its announcement follows in the
// background (see offer.Offers.Soon), so an upload never waits on the DHT.
func (n *Node) Upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error) {
	return n.UploadWith(ctx, r, UploadParams{Filename: filename, Mimetype: mimetype})
}

// UploadParams are one upload's settings: its file name, media type, and
// the block size it forces (0: the node's, see Config.BlockSize).
type UploadParams = upload.Params

// UploadWith is Upload with the upload's own settings.
func (n *Node) UploadWith(ctx context.Context, r io.Reader, p UploadParams) (cid.Cid, error) {
	c, m, err := n.up.UploadWith(ctx, r, p)
	if err != nil {
		return cid.Undef, err
	}
	n.log.Info("uploaded", "cid", store.CIDText(c), "filename", p.Filename, "blockSize", m.BlockSize)
	n.offers.Soon(c, m.TreeCID)
	return c, nil
}

// commitUpload stores an upload's manifest with its pinned record: the
// dataset exists from this one commit on, whole (its tree is held until
// then, see Upload).
func (n *Node) commitUpload(ctx context.Context, mb store.Block, m *manifest.Manifest) error {
	return n.keep.PutPinned(ctx, mb, m.TreeCID)
}

// Manifest returns the manifest of dataset c held locally. It is not a
// read of the dataset: its access time stays.
func (n *Node) Manifest(ctx context.Context, c cid.Cid) (*manifest.Manifest, error) {
	// Only the manifest: a Dataset would build a cache and an erasure
	// coder.
	_, m, err := manifest.Read(ctx, n.store, c)
	return m, err
}

// Has reports whether the manifest of c is held locally.
func (n *Node) Has(ctx context.Context, c cid.Cid) (bool, error) {
	return n.store.Has(ctx, c)
}

// Entry is a locally held dataset.
type Entry struct {
	CID      cid.Cid
	Manifest *manifest.Manifest
	// Pinned datasets are never garbage collected; the others are cached,
	// last read at LastAccess (to about a minute).
	Pinned     bool
	LastAccess time.Time
}

// List returns the datasets held locally: every manifest block in the store.
func (n *Node) List(ctx context.Context) ([]Entry, error) {
	records, err := retention.Records(ctx, n.ret)
	if err != nil {
		return nil, fmt.Errorf("list datasets: %w", err)
	}
	var out []Entry
	err = n.store.ForEach(ctx, store.CodecManifest, func(c cid.Cid) error {
		b, err := n.store.Get(ctx, c)
		if errors.Is(err, store.ErrNotFound) {
			return nil // deleted while we listed
		}
		if err != nil {
			return err
		}
		m, err := manifest.FromBlock(b)
		if err != nil {
			n.log.Warn("unreadable manifest in store", "cid", store.CIDText(c), "err", err)
			return nil
		}
		r, recorded := records[c]
		// No record: a dataset from before records, pinned (see
		// package retention).
		out = append(out, Entry{CID: c, Manifest: m, Pinned: !recorded || r.Pinned, LastAccess: r.LastAccess})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list datasets: %w", err)
	}
	return out, nil
}

// Delete drops dataset c from the local store, stopping its background
// fetch first, so that its removal frees all the fetch stored (see
// retention.Keeper.Remove). Blocks and leaves other datasets need stay.
func (n *Node) Delete(ctx context.Context, c cid.Cid) error {
	if c.Type() != store.CodecManifest {
		// A block alone: the store keeps one that leaves name (a held
		// dataset's), which goes only with its dataset.
		if err := n.store.Delete(ctx, c); err != nil {
			return fmt.Errorf("delete block %s: %w", store.CIDText(c), err)
		}
		return nil
	}
	if err := n.fetch.Stop(ctx, c); err != nil {
		return fmt.Errorf("delete %s: %w", store.CIDText(c), err)
	}
	if err := n.keep.Remove(ctx, c); err != nil {
		return fmt.Errorf("delete %s: %w", store.CIDText(c), err)
	}
	n.log.Info("deleted", "cid", store.CIDText(c))
	return nil
}

// Block reads one block held here by its CID.
func (n *Node) Block(ctx context.Context, c cid.Cid) (store.Block, error) { return n.store.Get(ctx, c) }

// Space reports the store's usage.
func (n *Node) Space(ctx context.Context) (store.Usage, error) { return n.store.Usage(ctx) }

// Addrs are the node's addresses, each ending in /p2p/<peer ID>.
func (n *Node) Addrs() []string {
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// Connect dials a peer by the given addresses, or finds it through the DHT.
func (n *Node) Connect(ctx context.Context, p peer.ID, addrs []string) error {
	ai := peer.AddrInfo{ID: p}
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("connect %s: address %q: %w", p, a, err)
		}
		ai.Addrs = append(ai.Addrs, m)
	}
	if len(ai.Addrs) == 0 {
		found, err := n.host.DHT().FindPeer(ctx, p)
		if err != nil {
			return fmt.Errorf("connect %s: find through the DHT: %w", p, err)
		}
		ai = found
	}
	// An explicit request to connect is worth a fresh dial even if an
	// earlier attempt to this peer failed and put it in dial backoff.
	return n.host.Connect(network.WithForceDirectDial(ctx, "connect requested"), ai)
}

// Peers lists the peers this node is connected to.
func (n *Node) Peers() []peer.ID { return n.host.Host().Network().Peers() }

// LocalStore is the node's own block store, without the network: for
// maintenance (and tests that take blocks away from a node).
func (n *Node) LocalStore() store.BlockStore { return n.store }

// Gatherer is what /metrics serves.
func (n *Node) Gatherer() prometheus.Gatherer { return n.metrics.Gatherer() }

// Engine is the node's block exchange (for stats and tests).
func (n *Node) Engine() *exchange.Engine { return n.engine }

// SpaceNeeded is the quota an upload of size bytes takes with the node's
// erasure coding and the block size it gets (blockSize if not 0, forced as
// UploadParams.BlockSize is): its blocks, parity, their proofs and the
// manifest.
func (n *Node) SpaceNeeded(size, blockSize uint64) uint64 {
	bs := n.up.BlockSize(size, blockSize)
	blocks := max((size+bs-1)/bs, 1)
	leaves := blocks
	if n.cfg.EcM > 0 {
		l, err := erasure.NewLayout(n.cfg.EcK, n.cfg.EcM, blocks)
		if err == nil {
			// Padding blocks are never stored.
			leaves = l.Total()
			blocks = l.Total() - (l.Rounded() - blocks)
		}
	}
	return blocks*bs + blocks*uint64(merkle.MaxProofLen(int(leaves))) + manifestAllowance
}

// manifestAllowance is an upper bound on an encoded manifest's size.
const manifestAllowance = 1024
