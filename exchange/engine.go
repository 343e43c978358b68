// Package exchange is the block-exchange engine of a meshfs node: it joins
// the wire (network), the fetching side (client) and the serving side
// (server) over one libp2p host, and routes each inbound message to the
// side it is for.
package exchange

import (
	"context"
	"log/slog"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshfs/meshfs/exchange/client"
	"github.com/meshfs/meshfs/exchange/message"
	xnet "github.com/meshfs/meshfs/exchange/network"
	"github.com/meshfs/meshfs/exchange/server"
	"github.com/meshfs/meshfs/store"
)

// Options configure the engine's parts.
type Options struct {
	Client  client.Options
	Server  server.Options
	Network xnet.Options
	Logger  *slog.Logger
}

// Engine is a running block exchange.
type Engine struct {
	h      host.Host
	net    *xnet.Network
	client *client.Client
	server *server.Server
}

// New starts the engine on h, serving from and storing into st, finding
// providers through disc.
func New(h host.Host, st store.BlockStore, disc client.Discoverer, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Client.Logger = opts.Logger
	opts.Server.Logger = opts.Logger
	opts.Network.Logger = opts.Logger
	e := &Engine{h: h}
	e.net = xnet.New(h, opts.Network)
	e.client = client.New(e.net, disc, hostPeers{h}, st, opts.Client)
	e.server = server.New(st, e.net, opts.Server)
	e.net.Start(e)
	return e
}

// Close stops the engine.
func (e *Engine) Close() {
	e.net.Close()
	e.client.Close()
	e.server.Close()
}

// GetLeaf fetches a dataset block from peers (see client.Client.GetLeaf).
func (e *Engine) GetLeaf(ctx context.Context, tree cid.Cid, index uint64, prio store.Priority) (store.Leaf, store.Block, error) {
	return e.client.GetLeaf(ctx, tree, index, prio)
}

// Get fetches a block by CID from peers.
func (e *Engine) Get(ctx context.Context, c cid.Cid) (store.Block, error) {
	return e.client.Get(ctx, c)
}

// Progress reports when the peers serving tree were last heard from and
// how many of its blocks have arrived (see client.Client.Progress).
func (e *Engine) Progress(tree cid.Cid) (time.Time, uint64) { return e.client.Progress(tree) }

// Delivered is how many of tree's blocks have arrived (client.Client.Delivered).
func (e *Engine) Delivered(tree cid.Cid) uint64 { return e.client.Delivered(tree) }

// ClientStats and ServerStats expose the counters of each side.
func (e *Engine) ClientStats() client.Stats { return e.client.Stats() }
func (e *Engine) ServerStats() server.Stats { return e.server.Stats() }

// NetworkLimits counts, by name, how often the network's bounds on peers
// were reached (see xnet.Network.Limits).
func (e *Engine) NetworkLimits() map[string]uint64 { return e.net.Limits() }

// Bandwidth is the caps on the exchange's traffic, bytes per second (0:
// none).
func (e *Engine) Bandwidth() (up, down int64) { return e.net.Bandwidth() }

// Relayed are the peers the exchange reaches only through a relay.
func (e *Engine) Relayed() []peer.ID { return e.net.Relayed() }

// HandleMessage implements network.Handler.
func (e *Engine) HandleMessage(from peer.ID, m *message.Message) {
	if e.client.Banned(from) {
		// A dropped peer that dials back in is not served or listened to
		// until its ban ends; it is dropped again. (Refusing its
		// connections outright would take a connection gater on the host.)
		go e.h.Network().ClosePeer(from)
		return
	}
	if len(m.WantList.Entries) > 0 || m.WantList.Full {
		e.server.HandleWants(from, m.WantList)
	}
	if len(m.Presences) > 0 {
		e.client.HandlePresences(from, m.Presences)
	}
	if len(m.Blocks) > 0 {
		e.client.HandleBlocks(from, m.Blocks)
	}
}

// PeerDisconnected implements network.Handler.
func (e *Engine) PeerDisconnected(p peer.ID) {
	e.client.PeerGone(p)
	e.server.PeerGone(p)
}

// hostPeers gives the client the host's view of peers.
type hostPeers struct{ h host.Host }

func (hp hostPeers) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if ai.ID == hp.h.ID() {
		return nil
	}
	return hp.h.Connect(ctx, ai)
}

// Connected lists connected peers that speak the exchange protocol (as far
// as identify has told us), so WantHaves do not go to DHT-only peers. A
// peer reached only through a relay (Limited) counts: the exchange sends
// to it there, within the relay's limits (exchange/network).
func (hp hostPeers) Connected() []peer.ID {
	var out []peer.ID
	for _, p := range hp.h.Network().Peers() {
		if c := hp.h.Network().Connectedness(p); c != network.Connected && c != network.Limited {
			continue
		}
		// Skip only peers known not to speak it: one whose identify has not
		// finished yet (no protocols recorded) may well, and leaving it out
		// could make a fetch right after connecting find nobody to ask.
		known, err := hp.h.Peerstore().GetProtocols(p)
		if err == nil && len(known) > 0 {
			if ok, err := hp.h.Peerstore().SupportsProtocols(p, protocol.ID(message.ProtocolID)); err == nil && len(ok) == 0 {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

func (hp hostPeers) Disconnect(p peer.ID) { _ = hp.h.Network().ClosePeer(p) }
