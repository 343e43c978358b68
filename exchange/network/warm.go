package network

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshfs/meshfs/exchange/message"
)

// A peer's exchange streams are opened as soon as identify says it speaks
// the protocol, each with an empty message that completes the protocol's
// negotiation, rather than by the first want and its answers. A cold
// read's first block otherwise waited for three stream setups in turn
// (our wants' stream, the peer's answers', the peer's blocks'), which cost
// as much as the round trips themselves on loopback. Connections through
// a relay are left alone: their bytes are the relay's to count.

// watchIdentify warms the streams of each peer identified from now on,
// until the network closes.
func (n *Network) watchIdentify() {
	sub, err := n.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		n.log.Warn("exchange: no identify events; streams open on first use", "err", err)
		return
	}
	n.mu.Lock()
	n.identified = sub
	n.mu.Unlock()
	go func() {
		for ev := range sub.Out() {
			e := ev.(event.EvtPeerIdentificationCompleted)
			if e.Conn.Stat().Limited || !slices.Contains(e.Protocols, protocol.ID(message.ProtocolID)) {
				continue
			}
			n.warm(e.Peer)
		}
	}()
}

// warm has p's sender open its control stream and first lane now.
func (n *Network) warm(p peer.ID) {
	s, err := n.sender(p)
	if err != nil {
		return // closed
	}
	for _, q := range []chan item{s.control, s.queue} {
		select {
		case q <- item{m: &message.Message{}}:
		default: // already busy: it has its stream, or soon will
		}
	}
}
