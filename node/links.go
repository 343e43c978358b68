package node

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/p2p"
)

// NATStatus is how the node stands with the NATs between it and its peers.
type NATStatus struct {
	// Reachability: p2p.ReachabilityPublic, Private or Unknown.
	Reachability string
	// RelayAddrs are the node's addresses through its relays.
	RelayAddrs []string
	// RelayService says the node serves as a relay when public.
	RelayService bool
	// Reachable and Unreachable are its addresses that AutoNAT v2 had
	// peers dial back, and whether they got through.
	Reachable, Unreachable []string
}

// NAT is the node's reachability and relay addresses.
func (n *Node) NAT() NATStatus {
	st := NATStatus{Reachability: n.host.Reachability(), RelayService: n.cfg.RelayService}
	for _, a := range n.host.RelayAddrs() {
		st.RelayAddrs = append(st.RelayAddrs, a.String())
	}
	reachable, unreachable := n.host.ConfirmedAddrs()
	for _, a := range reachable {
		st.Reachable = append(st.Reachable, a.String())
	}
	for _, a := range unreachable {
		st.Unreachable = append(st.Unreachable, a.String())
	}
	return st
}

// PeerLink is one connected peer and how it is reached.
type PeerLink struct {
	ID peer.ID
	// Relayed: every connection to it goes through a relay.
	Relayed bool
	// ExchangeRelayed: the block exchange sends to it through the relay,
	// within the relay's limits, for want of a direct connection.
	ExchangeRelayed bool
}

// PeerLinks are the connected peers, each direct or relayed.
func (n *Node) PeerLinks() []PeerLink {
	stuck := map[peer.ID]bool{}
	for _, p := range n.engine.Relayed() {
		stuck[p] = true
	}
	var out []PeerLink
	for _, p := range n.Peers() {
		out = append(out, PeerLink{ID: p, Relayed: n.host.Relayed(p), ExchangeRelayed: stuck[p]})
	}
	return out
}

// relayHint names the relay's limit when some peers are reached only
// through one: a read that stalls may well be waiting on them.
func (n *Node) relayHint() string {
	k := len(n.engine.Relayed())
	if k == 0 {
		return ""
	}
	data, secs := p2p.RelayLimit()
	return fmt.Sprintf("%d peer(s) are reached only through a relay, which lets %d KiB and %d s through each connection: what only they hold cannot be read in full until a direct connection is made (forward a port to them, or --nat-portmap)", k, data>>10, secs)
}
