package node

import "github.com/libp2p/go-libp2p/core/peer"

// NATStatus is how the node stands with the NATs between it and its peers.
type NATStatus struct {
	// Reachability: p2p.ReachabilityPublic, Private or Unknown.
	Reachability string
	// RelayAddrs are the node's addresses through its relays.
	RelayAddrs []string
	// RelayService says the node serves as a relay when public.
	RelayService bool
}

// NAT is the node's reachability and relay addresses.
func (n *Node) NAT() NATStatus {
	st := NATStatus{Reachability: n.host.Reachability(), RelayService: n.cfg.RelayService}
	for _, a := range n.host.RelayAddrs() {
		st.RelayAddrs = append(st.RelayAddrs, a.String())
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
