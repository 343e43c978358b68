package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// NAT traversal, with libp2p's own parts and nothing of the public IPFS
// network: the relays a node may use are the ones it is given (--relay)
// or, without any, its bootstrap peers; AutoNAT asks connected meshfs
// peers to dial back; hole punching (DCUtR) turns a relayed connection
// into a direct one where the NATs allow it. On a LAN or loopback none of
// it does anything: AutoNAT only judges public addresses, so reachability
// stays unknown there and no relay is reserved.

// Reachability values, as status and /debug/info show them.
const (
	ReachabilityUnknown = "unknown"
	ReachabilityPublic  = "public"
	ReachabilityPrivate = "private"
)

// NATConfig is Config's part for traversing NATs.
type NATConfig struct {
	// Relays are the circuit relays the node reserves a slot on when it
	// finds itself unreachable; nil means its bootstrap peers, those of
	// them that serve as relays.
	Relays []peer.AddrInfo
	// RelayService serves as a relay for other nodes, within libp2p's
	// default limits (RelayLimit); it starts only once the node is
	// publicly reachable.
	RelayService bool
	// PortMap asks the router for a port mapping by UPnP or NAT-PMP.
	PortMap bool
	// Reachability forces what AutoNAT would find: ReachabilityPublic
	// (a relay or any node with a known public address) or
	// ReachabilityPrivate (a node that knows it is behind a NAT and
	// should reserve a relay slot at once); "" or ReachabilityUnknown
	// lets AutoNAT decide.
	Reachability string
}

// RelayLimit is what a relay lets through one relayed connection, libp2p's
// defaults: a relay is for meeting, not for bulk.
func RelayLimit() (data uint64, seconds int) {
	l := relay.DefaultLimit()
	return uint64(l.Data), int(l.Duration.Seconds())
}

// natOptions are the libp2p options for cfg; bootstrap stands in for
// relays not given.
func natOptions(cfg NATConfig, bootstrap []peer.AddrInfo) ([]libp2p.Option, error) {
	relays := cfg.Relays
	if len(relays) == 0 {
		relays = bootstrap
	}
	opts := []libp2p.Option{
		// The relay transport: dialling through relays and being dialled
		// through them.
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(),
		// Dial-back for peers asking whether they are reachable, v1 (which
		// drives reachability) and v2 (per address). Both dial only the
		// asking peer's own observed IP and are rate limited.
		libp2p.EnableNATService(),
		libp2p.EnableAutoNATv2(),
	}
	if len(relays) > 0 {
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(slices.Clone(relays)))
	}
	if cfg.RelayService {
		opts = append(opts, libp2p.EnableRelayService(relay.WithResources(relay.DefaultResources())))
	}
	if cfg.PortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	switch cfg.Reachability {
	case "", ReachabilityUnknown:
	case ReachabilityPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachabilityPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	default:
		return nil, fmt.Errorf("reachability %q: want public, private or unknown", cfg.Reachability)
	}
	return opts, nil
}

// reachability follows the host's reachability as AutoNAT (or a forced
// setting) reports it.
type reachability struct {
	mu  sync.Mutex
	now network.Reachability
	sub event.Subscription
}

func (r *reachability) follow(sub event.Subscription, log *slog.Logger) {
	r.sub = sub
	go func() {
		for e := range sub.Out() {
			ev := e.(event.EvtLocalReachabilityChanged)
			r.mu.Lock()
			r.now = ev.Reachability
			r.mu.Unlock()
			log.Info("reachability changed", "reachability", r.String())
		}
	}()
}

func (r *reachability) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.now {
	case network.ReachabilityPublic:
		return ReachabilityPublic
	case network.ReachabilityPrivate:
		return ReachabilityPrivate
	}
	return ReachabilityUnknown
}

// Reachability is whether the node's peers can dial it: public, private
// (behind a NAT: they reach it through its relays) or unknown (AutoNAT
// has not judged, as on a LAN where no address is public).
func (n *Host) Reachability() string { return n.reach.String() }

// RelayAddrs are the node's addresses through the relays it holds a slot
// on: what peers that cannot dial it directly dial instead.
func (n *Host) RelayAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.Addrs() {
		if IsRelayed(a) {
			out = append(out, a)
		}
	}
	return out
}

// ConfirmedAddrs are the node's addresses that AutoNAT v2 has had peers
// dial back, reachable and unreachable (none before any peer answered).
func (n *Host) ConfirmedAddrs() (reachable, unreachable []ma.Multiaddr) {
	c, ok := n.h.(interface {
		ConfirmedAddrs() (reachable, unreachable, unknown []ma.Multiaddr)
	})
	if !ok {
		return nil, nil
	}
	reachable, unreachable, _ = c.ConfirmedAddrs()
	return reachable, unreachable
}

// IsRelayed reports whether a reaches its peer through a relay.
func IsRelayed(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// Relayed reports whether every connection to p goes through a relay
// (false when there is none).
func (n *Host) Relayed(p peer.ID) bool { return onlyRelayed(n.h, p) }

func onlyRelayed(h host.Host, p peer.ID) bool {
	conns := h.Network().ConnsToPeer(p)
	for _, c := range conns {
		if !c.Stat().Limited && !IsRelayed(c.RemoteMultiaddr()) {
			return false
		}
	}
	return len(conns) > 0
}

// TreatAsPublic makes libp2p's NAT traversal count addresses in nets as
// public: the network between the NATs (a company WAN in 10/8, a test
// network in 198.18.0.0/15), where the address ranges libp2p files as
// private or unroutable are all there is. AutoNAT, relays and hole
// punching otherwise ignore such addresses. It changes the judgement for
// the whole process, so it is called once, before any host starts. Every
// range libp2p lists that overlaps a net must lie within it (a part of a
// listed range cannot be carved out).
func TreatAsPublic(nets []*net.IPNet) error {
	for _, n := range nets {
		var err error
		if manet.Private4, err = dropWithin(manet.Private4, n); err != nil {
			return err
		}
		if manet.Unroutable4, err = dropWithin(manet.Unroutable4, n); err != nil {
			return err
		}
		if manet.Private6, err = dropWithin(manet.Private6, n); err != nil {
			return err
		}
		if manet.Unroutable6, err = dropWithin(manet.Unroutable6, n); err != nil {
			return err
		}
	}
	return nil
}

// dropWithin removes from ranges those within n, and fails for one that
// overlaps n without lying within it.
func dropWithin(ranges []*net.IPNet, n *net.IPNet) ([]*net.IPNet, error) {
	nOnes, nBits := n.Mask.Size()
	var kept []*net.IPNet
	for _, r := range ranges {
		rOnes, rBits := r.Mask.Size()
		switch {
		case rBits != nBits || !(r.Contains(n.IP) || n.Contains(r.IP)):
			kept = append(kept, r)
		case rOnes >= nOnes: // r within n
		default:
			return nil, fmt.Errorf("%s is part of %s, which libp2p counts as not public: name all of it", n, r)
		}
	}
	return kept, nil
}

// ParseNets parses comma-separated CIDRs, as --public-net takes them.
func ParseNets(s string) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		_, n, err := net.ParseCIDR(f)
		if err != nil {
			// net's error repeats the text; say what is wanted instead.
			return nil, fmt.Errorf("network %q: not a CIDR (address/prefix length, e.g. 198.18.0.0/15)", f)
		}
		nets = append(nets, n)
	}
	if len(nets) == 0 {
		return nil, errors.New("no network given")
	}
	return nets, nil
}
