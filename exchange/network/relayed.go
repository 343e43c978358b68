package network

import (
	"context"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshfs/meshfs/exchange/message"
)

// A peer behind a NAT may be connected only through a relay, whose limits
// (a little data, a few minutes per connection) are meant for meeting.
// libp2p refuses a stream on such a "limited" connection unless told
// otherwise, and would wait instead for hole punching to make a direct
// one: longer than a want's answer may take. So the exchange sends over
// the relay at once, within what the relay lets through, and moves each
// stream to the direct connection as soon as there is one (between two
// messages, so nothing is lost). A peer never reached directly gets what
// fits in the relay's limits, and says so in the log and in Relayed.

// newStream opens an exchange stream to p: on a direct connection when
// there is one, else through a relay.
func (n *Network) newStream(ctx context.Context, p peer.ID) (network.Stream, error) {
	ctx = network.WithAllowLimitedConn(ctx, "meshfs block exchange, until a direct connection")
	st, err := n.h.NewStream(ctx, p, protocol.ID(message.ProtocolID))
	if err != nil {
		return nil, err
	}
	if st.Conn().Stat().Limited {
		n.markRelayed(p)
	} else {
		n.markDirect(p)
	}
	return st, nil
}

// directAfterRelay reports whether st goes through a relay while a direct
// connection to its peer has come since.
func (n *Network) directAfterRelay(st network.Stream) bool {
	return st.Conn().Stat().Limited && !n.limitedOnly(st.Conn().RemotePeer())
}

// limitedOnly reports whether p is connected, and only over limited
// (relayed) connections.
func (n *Network) limitedOnly(p peer.ID) bool {
	conns := n.h.Network().ConnsToPeer(p)
	for _, c := range conns {
		if !c.Stat().Limited {
			return false
		}
	}
	return len(conns) > 0
}

// markRelayed remembers that p is reached through a relay, and says so
// once.
func (n *Network) markRelayed(p peer.ID) {
	n.mu.Lock()
	first := !n.relayed[p]
	n.relayed[p] = true
	n.mu.Unlock()
	if first {
		n.log.Warn("exchanging blocks with a peer through a relay: only what the relay's limits allow flows until a direct connection is made (hole punching)", "peer", p)
	}
}

// markDirect forgets that p was reached through a relay, saying so if it
// was.
func (n *Network) markDirect(p peer.ID) {
	n.mu.Lock()
	was := n.relayed[p]
	delete(n.relayed, p)
	n.mu.Unlock()
	if was {
		n.log.Info("direct connection to a peer reached through a relay before: blocks now flow directly", "peer", p)
	}
}

// Relayed are the peers the exchange last reached through a relay, for
// want of a direct connection, and has no direct connection to now
// (connected through the relay still, or not at all: a relay closes a
// connection past its limits).
func (n *Network) Relayed() []peer.ID {
	n.mu.Lock()
	marked := make([]peer.ID, 0, len(n.relayed))
	for p := range n.relayed {
		marked = append(marked, p)
	}
	n.mu.Unlock()
	out := marked[:0]
	for _, p := range marked {
		if n.limitedOnly(p) || len(n.h.Network().ConnsToPeer(p)) == 0 {
			out = append(out, p)
		}
	}
	return out
}
