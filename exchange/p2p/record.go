package p2p

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// SignedPeerRecord is the node's addresses signed with its key: a libp2p
// signed envelope of a peer record, the very format of Codex's SPR (which
// nim-libp2p makes the same way), as text: "spr:" and the envelope in
// unpadded URL-safe base64. Anyone can check it against the peer ID; what
// it cannot be, on a libp2p DHT, is a discv5 ENR: meshfs's DHT is Kademlia
// over libp2p streams, found through peer IDs, not Codex's discv5 table.
//
// A record is made once per set of addresses, so that it stays the same
// while they do: its sequence number is the time it was made, and a new
// one would tell peers the addresses changed.
func (n *Host) SignedPeerRecord() (string, error) {
	ai := n.AddrInfo()
	key := fmt.Sprint(ai.Addrs)
	n.sprMu.Lock()
	defer n.sprMu.Unlock()
	if n.sprAddrs == key && n.spr != "" {
		return n.spr, nil
	}
	spr, err := n.sealRecord(ai)
	if err != nil {
		return "", err
	}
	n.spr, n.sprAddrs = spr, key
	return spr, nil
}

func (n *Host) sealRecord(ai peer.AddrInfo) (string, error) {
	key := n.h.Peerstore().PrivKey(n.h.ID())
	if key == nil {
		return "", errors.New("signed peer record: the host has no private key")
	}
	env, err := record.Seal(peer.PeerRecordFromAddrInfo(ai), key)
	if err != nil {
		return "", fmt.Errorf("signed peer record: %w", err)
	}
	b, err := env.Marshal()
	if err != nil {
		return "", fmt.Errorf("signed peer record: %w", err)
	}
	return "spr:" + base64.RawURLEncoding.EncodeToString(b), nil
}

// TableEntry is one peer of the DHT's routing table.
type TableEntry struct {
	Peer peer.ID
	// Key is the peer's place in the DHT's key space (SHA-256 of its ID),
	// in hex: Codex's nodeId.
	Key string
	// Addr is an address the peer is known at, or empty.
	Addr string
	// Connected: there is a connection to the peer now (Codex's seen).
	Connected bool
}

// RoutingTable lists the peers of the DHT's routing table, and Self this
// node as one of them.
func (n *Host) RoutingTable() (self TableEntry, peers []TableEntry) {
	entry := func(p peer.ID) TableEntry {
		e := TableEntry{Peer: p, Key: hex.EncodeToString(kbucket.ConvertPeerID(p)), Connected: n.h.Network().Connectedness(p) != network.NotConnected}
		if addrs := n.h.Peerstore().Addrs(p); len(addrs) > 0 {
			e.Addr = addrs[0].String()
		}
		return e
	}
	self = entry(n.h.ID())
	if as := n.Addrs(); len(as) > 0 {
		self.Addr = as[0].String()
	}
	self.Connected = true
	for _, p := range n.dht.RoutingTable().ListPeers() {
		peers = append(peers, entry(p))
	}
	return self, peers
}
