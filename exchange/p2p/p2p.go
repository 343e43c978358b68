// Package p2p builds a meshfs node's libp2p host and Kademlia DHT.
//
// meshfs networks are closed: a node dials only the peers it is given with
// --bootstrap (and --relay), the peers the DHT learns from them, and with
// --mdns the meshfs nodes on its LAN. Nothing here ever contacts public
// IPFS/libp2p infrastructure: no default bootstrap peers or relays, no
// port mapping unless asked for. NAT traversal (nat.go) works among the
// network's own nodes.
package p2p

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshfs/meshfs/exchange/message"
)

// DefaultListen are the listen multiaddrs used when Config.Listen is empty.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/8070", "/ip4/0.0.0.0/udp/8070/quic-v1"}

// DHTProtocolPrefix makes the DHT speak /meshfs/kad/1.0.0, so a meshfs node
// can never join (or be joined by) the public IPFS Amino DHT by accident.
const DHTProtocolPrefix protocol.ID = "/meshfs"

// Connection manager water marks. A storage node talks to few peers at a
// time but wants to keep them: re-dialling costs a TCP+TLS handshake and a
// fresh yamux window that has to grow again. 160/192 is go-libp2p's default;
// meshfs networks can be a few hundred nodes, and every DHT routing-table
// peer is worth keeping, so the marks are higher. Peers the DHT holds in its
// low buckets are protected from trimming by the DHT itself.
const (
	connLowWater  = 256
	connHighWater = 512
	connGrace     = time.Minute
)

// DefaultConnectTimeout bounds the dial of each bootstrap peer at start.
const DefaultConnectTimeout = 15 * time.Second

// Config configures New.
type Config struct {
	// Key is the node's persistent identity; required, so the peer ID the
	// DHT knows the node by survives restarts.
	Key crypto.PrivKey
	// Listen multiaddrs; DefaultListen when empty.
	Listen []string
	// Bootstrap peers: the only peers dialled on our own initiative.
	Bootstrap []peer.AddrInfo
	// ConnectTimeout bounds each bootstrap dial at start; 0 means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MDNS announces the node on its LANs by multicast DNS and dials the
	// meshfs nodes it hears of there, so that nodes on one LAN find each
	// other with no Bootstrap. Off unless asked: it tells every host on
	// the LAN that a node runs here, and where.
	MDNS bool
	// NAT configures relays, hole punching and reachability (nat.go).
	NAT    NATConfig
	Logger *slog.Logger
}

// Host is a meshfs libp2p host with its DHT.
type Host struct {
	h         host.Host
	dht       *dht.IpfsDHT
	log       *slog.Logger
	mdns      io.Closer // nil unless Config.MDNS
	reach     reachability
	closeOnce sync.Once
	closeErr  error

	sprMu    sync.Mutex
	spr      string // the last signed peer record made (SignedPeerRecord)
	sprAddrs string // the addresses it was made for
}

// New starts a libp2p host listening on cfg.Listen, starts a DHT on it (a
// server unless behind a NAT), dials the bootstrap peers (failures are logged, not fatal: the DHT
// retries them while its routing table is empty) and bootstraps the DHT.
// ctx bounds only the start-up dials; the host lives until Close.
func New(ctx context.Context, cfg Config) (*Host, error) {
	if cfg.Key == nil {
		return nil, errors.New("p2p: no identity key")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if len(cfg.Listen) == 0 {
		cfg.Listen = DefaultListen
	}
	cfg.ConnectTimeout = cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout)
	log := cfg.Logger.With("component", "p2p")

	rm, err := newResourceManager()
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(connLowWater, connHighWater, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}

	natOpts, err := natOptions(cfg.NAT, cfg.Bootstrap)
	if err != nil {
		_ = cm.Close()
		_ = rm.Close()
		return nil, fmt.Errorf("p2p: %w", err)
	}
	opts := append([]libp2p.Option{
		libp2p.Identity(cfg.Key),
		libp2p.ListenAddrStrings(cfg.Listen...),
		// Giving transports explicitly replaces libp2p's default set
		// (which would add WebSocket, WebTransport and WebRTC).
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		// Order is preference: on loopback and LAN TLS moves about twice
		// the bytes per CPU-second Noise does (FIELD-NOTES), and the CPU
		// is the limit there. Noise stays for peers that only speak it.
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		// meshfs networks live on private and test ranges (loopback,
		// 10/8, 198.18.0.0/15): those addresses must be advertised. This
		// is go-libp2p's default today; it is pinned here because the
		// whole network breaks if a future default hides them.
		libp2p.NonPublicAddrPublishing(true),
		// libp2p's metrics register in the global Prometheus registry;
		// meshfs exports its own metrics, and several hosts in one process
		// (tests) would share and confuse those collectors.
		libp2p.DisableMetrics(),
		libp2p.UserAgent("meshfs"),
	}, natOpts...)
	h, err := libp2p.New(opts...)
	if err != nil {
		// libp2p.New closes what it was given only on some error paths;
		// closing twice is harmless for both.
		_ = cm.Close()
		_ = rm.Close()
		return nil, fmt.Errorf("p2p: libp2p host: %w", err)
	}

	// dht.New takes no context in v0.42 (older examples pass one); the DHT
	// lives until Close.
	kad, err := dht.New(h,
		// A server while reachable or not known to be unreachable (a LAN,
		// loopback: AutoNAT stays unknown there); a client once behind a
		// NAT, as IPFS nodes are, so that nobody routes queries or
		// provider records through a node they can reach only by relay.
		dht.Mode(dht.ModeAutoServer),
		dht.ProtocolPrefix(DHTProtocolPrefix),
		// Only our own peers, and always set: the DHT re-dials them every
		// couple of minutes while its routing table is empty. It never
		// falls back to dht.DefaultBootstrapPeers (public IPFS nodes), but
		// an explicit (possibly empty) list keeps it that way.
		dht.BootstrapPeers(cfg.Bootstrap...),
		// v0.42.2 defaults to accept-all query and routing-table filters,
		// no address filter and no IP diversity filter, so loopback and
		// private peers work. The filters it ships for the dual (WAN/LAN)
		// setup would not: PublicQueryFilter and PublicRoutingTableFilter
		// drop loopback and RFC 1918 peers, and the Private ones drop
		// 198.18.0.0/15 (manet files it as "unroutable", neither public
		// nor private), which is what our test networks use. Pin
		// accept-all so an upgrade or a copied option cannot change that.
		//
		// One exception: a peer connected only through a relay. The
		// DHT's streams to it wait for a direct connection that may never
		// come (a symmetric NAT), and a provide then waits out its whole
		// deadline: announcements behind such NATs all failed. Its
		// records live on the peers it is directly connected to.
		dht.QueryFilter(func(_ any, ai peer.AddrInfo) bool { return !onlyRelayed(h, ai.ID) }),
		dht.RoutingTableFilter(func(_ any, p peer.ID) bool { return !onlyRelayed(h, p) }),
	)
	if err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("p2p: dht: %w", err)
	}

	n := &Host{h: h, dht: kad, log: log}
	// A buffered subscription replays the current state, so a forced
	// reachability is seen too.
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		_ = kad.Close()
		_ = h.Close()
		return nil, fmt.Errorf("p2p: subscribe reachability: %w", err)
	}
	n.reach.follow(sub, log)
	log.Info("libp2p host started", "peer", h.ID(), "addrs", n.Addrs())

	if cfg.MDNS {
		// The service's resolver lives until Close; its dials end with ctx.
		if err := n.startMDNS(ctx); err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("p2p: mdns: %w", err)
		}
	}
	n.connectBootstrap(ctx, cfg.Bootstrap, cfg.ConnectTimeout)
	// Bootstrap only nudges the DHT (fill the routing table from connected
	// peers, start a refresh) and returns at once; WaitRouting waits.
	if err := kad.Bootstrap(ctx); err != nil {
		log.Warn("dht bootstrap", "err", err)
	}
	return n, nil
}

// newResourceManager returns go-libp2p's resource manager with its default
// limits scaled to this machine, then opened up per peer.
//
// Why not the plain defaults: they are tuned for an IPFS node talking to
// thousands of strangers, so each peer and each protocol-per-peer gets a
// small memory share (16 MiB for a protocol with one peer). yamux reserves
// its receive window from those scopes; when a reservation fails the window
// stops growing, and a bulk transfer from one peer is capped far below what
// the link and CPU could do. A storage node has the opposite shape: few
// peers, big transfers.
//
// Why not infinite limits: the system-wide ceilings (memory 1/8 of RAM,
// file descriptors, connection counts) are still worth having: a buggy or
// hostile peer should not take the node down. So the system and transient
// scopes keep their scaled defaults (here, 24 GiB of RAM: 3.1 GiB, 10000
// file descriptors), and one peer, one protocol, or one protocol with one
// peer may use up to half of that memory and thousands of streams. Measured
// on loopback: the plain defaults carried a 256 MiB stream at about 450
// MB/s where these limits and infinite ones both gave 650-770 MB/s.
func newResourceManager() (network.ResourceManager, error) {
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limitConfig()), rcmgr.WithMetricsDisabled())
}

// limitConfig computes the limits newResourceManager explains.
func limitConfig() rcmgr.ConcreteLimitConfig {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	base := scaling.AutoScale()
	sys := base.ToPartialLimitConfig().System
	perPeer := rcmgr.ResourceLimits{
		Memory:          rcmgr.LimitVal64(sys.Memory.Build(128<<20) / 2),
		Streams:         4096,
		StreamsInbound:  2048,
		StreamsOutbound: 2048,
	}
	partial := rcmgr.PartialLimitConfig{
		PeerDefault:         perPeer,
		ProtocolPeerDefault: perPeer,
		ServicePeerDefault:  perPeer,
		ProtocolDefault:     rcmgr.ResourceLimits{Memory: perPeer.Memory},
		// The block exchange takes the memory of the messages it is
		// reading from its streams' scopes (exchange/network): these are
		// its budgets for them, per peer and in total. Past them a reader
		// waits for room, and its peer's flow control holds the sender.
		Protocol: map[protocol.ID]rcmgr.ResourceLimits{
			message.ProtocolID: {Memory: rcmgr.LimitVal64(exchangeMemory(sys.Memory.Build(128 << 20)))},
		},
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{
			message.ProtocolID: {Memory: ExchangePeerMemory},
		},
	}
	// The system connection limit must stay above the connection
	// manager's high water mark, or the manager never gets to trim before
	// the resource manager refuses connections.
	if minConns := rcmgr.LimitVal(2 * connHighWater); sys.Conns.Build(0) < int(minConns) {
		partial.System = rcmgr.ResourceLimits{Conns: minConns, ConnsInbound: minConns, ConnsOutbound: minConns}
	}
	return partial.Build(base)
}

// ExchangePeerMemory bounds the inbound exchange messages one peer may
// have us read at once: four of the largest (16 MiB), one per lane it
// sends blocks on.
const ExchangePeerMemory = 64 << 20

// exchangeMemory bounds the inbound exchange messages of all peers at
// once: a quarter of the system's memory ceiling, within 256 MiB to 1 GiB.
func exchangeMemory(system int64) int64 {
	return min(max(system/4, 256<<20), 1<<30)
}

// connectBootstrap dials every bootstrap peer concurrently, each bounded by
// timeout. A peer that is down is logged and skipped: the node must start
// anyway (the DHT keeps retrying its bootstrap peers while it knows nobody).
func (n *Host) connectBootstrap(ctx context.Context, peers []peer.AddrInfo, timeout time.Duration) {
	var wg sync.WaitGroup
	for _, ai := range peers {
		if ai.ID == n.h.ID() {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := n.h.Connect(cctx, ai); err != nil {
				n.log.Warn("bootstrap peer unreachable", "peer", ai.ID, "err", err)
				return
			}
			n.log.Debug("connected to bootstrap peer", "peer", ai.ID)
		})
	}
	wg.Wait()
}

// Host is the underlying libp2p host.
func (n *Host) Host() host.Host { return n.h }

// DHT is the node's Kademlia DHT (/meshfs/kad/1.0.0).
func (n *Host) DHT() *dht.IpfsDHT { return n.dht }

// ID is the node's peer ID.
func (n *Host) ID() peer.ID { return n.h.ID() }

// AddrInfo is the node's peer ID and listen addresses, as another node's
// Config.Bootstrap wants them.
func (n *Host) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()}
}

// Addrs are the node's addresses with /p2p/<peer ID> appended, ready to be
// given to another node as --bootstrap. Listening on 0.0.0.0 yields one
// address per interface.
func (n *Host) Addrs() []ma.Multiaddr {
	ai := n.AddrInfo()
	addrs, err := peer.AddrInfoToP2pAddrs(&ai)
	if err != nil {
		// Only fails for an empty peer ID, which a running host never has.
		n.log.Error("p2p addrs", "err", err)
		return nil
	}
	return addrs
}

// Connect dials p (a no-op when already connected).
func (n *Host) Connect(ctx context.Context, p peer.AddrInfo) error {
	if err := n.h.Connect(ctx, p); err != nil {
		return fmt.Errorf("p2p: connect %s: %w", p.ID, err)
	}
	return nil
}

// routingPollInterval is how often WaitRouting rechecks the routing table.
// The DHT publishes no event when it adds a peer, so the check is woken by
// identify completions (the moment a peer can become a DHT peer) and, since
// the DHT adds the peer a little after identify, by this short ticker.
const routingPollInterval = 20 * time.Millisecond

// WaitRouting blocks until the DHT's routing table holds at least one peer,
// that is until provide and find-providers can reach anybody, or until ctx
// is done.
func (n *Host) WaitRouting(ctx context.Context) error {
	if n.dht.RoutingTable().Size() > 0 {
		return nil
	}
	sub, err := n.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("p2p: subscribe identify events: %w", err)
	}
	defer sub.Close()
	tick := time.NewTicker(routingPollInterval)
	defer tick.Stop()
	for n.dht.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("p2p: waiting for DHT peers: %w", ctx.Err())
		case <-sub.Out():
		case <-tick.C:
		}
	}
	return nil
}

// Close stops the DHT, then the host (and with it every connection, the
// resource and connection managers).
func (n *Host) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.mdns != nil {
			if err := n.mdns.Close(); err != nil {
				errs = append(errs, fmt.Errorf("mdns: %w", err))
			}
		}
		_ = n.reach.sub.Close()
		if err := n.dht.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dht: %w", err))
		}
		if err := n.h.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("p2p: close: %w", err)
		}
	})
	return n.closeErr
}
