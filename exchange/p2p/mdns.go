package p2p

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// MDNSService is the DNS-SD service type meshfs nodes announce on the LAN:
// their own, so that they find each other and not the IPFS nodes (which
// announce _p2p._udp) on the same network.
const MDNSService = "_meshfs._udp"

// mdnsDialTimeout bounds the dial of a peer found on the LAN: one hop away,
// it answers within a second or is not worth waiting for.
const mdnsDialTimeout = 10 * time.Second

// mdnsDialDefer is how long the node with the larger peer ID waits for a
// peer found on the LAN to dial it before dialling it itself.
const mdnsDialDefer = 2 * time.Second

// lanPeers dials the meshfs nodes mDNS finds on the LAN. Once connected,
// they are in the DHT's routing table like any peer, so datasets they hold
// are found with no --bootstrap.
type lanPeers struct {
	n   *Host
	ctx context.Context // the host's life
}

// HandlePeerFound is mdns.Notifee's: called for every answer, again and
// again for the same peers, so peers already connected are left alone.
func (l lanPeers) HandlePeerFound(ai peer.AddrInfo) {
	h := l.n.h
	if ai.ID == h.ID() || len(h.Network().ConnsToPeer(ai.ID)) > 0 || l.ctx.Err() != nil {
		return
	}
	go func() {
		if h.ID() > ai.ID {
			// Two nodes that hear each other at once would dial each
			// other at once, both from their listening port (reuseport),
			// and the two SYNs can meet as one TCP simultaneous open,
			// whose security handshake both sides then refuse: neither
			// connects. The node with the larger ID lets the other dial
			// first, and dials only if that did not connect them.
			select {
			case <-time.After(mdnsDialDefer):
			case <-l.ctx.Done():
				return
			}
			if len(h.Network().ConnsToPeer(ai.ID)) > 0 {
				return
			}
		}
		ctx, cancel := context.WithTimeout(l.ctx, mdnsDialTimeout)
		defer cancel()
		if err := h.Connect(ctx, ai); err != nil {
			l.n.log.Debug("mdns: cannot dial a peer found on the LAN", "peer", ai.ID, "err", err)
			return
		}
		l.n.log.Info("connected to a peer found on the LAN (mDNS)", "peer", ai.ID, "addrs", ai.Addrs)
	}()
}

// startMDNS announces the node on the LAN and dials the nodes it hears of.
func (n *Host) startMDNS(ctx context.Context) error {
	svc := mdns.NewMdnsService(n.h, MDNSService, lanPeers{n: n, ctx: ctx})
	if err := svc.Start(); err != nil {
		return err
	}
	n.mdns = svc
	n.log.Info("mdns: announcing this node on the LAN", "service", MDNSService)
	return nil
}
