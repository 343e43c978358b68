package client

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
)

// bareClient is a client with no loop, network or store: enough to hand
// it deliveries for wants it no longer has.
func bareClient(at *time.Time) *Client {
	return &Client{
		opts: Options{MaxOffences: 3, BlockTimeout: time.Second, BanFor: time.Hour, Clock: func() time.Time { return *at }},
		log:  slog.New(slog.DiscardHandler), wants: map[message.Key]*want{}, peerSt: map[peer.ID]*peerState{},
		banned: map[peer.ID]time.Time{}, offence: map[peer.ID]offences{}, trees: map[cid.Cid]*treeState{},
		peers: noPeers{},
	}
}

// noPeers is a network with nobody on it.
type noPeers struct{}

func (noPeers) Connect(context.Context, peer.AddrInfo) error { return nil }
func (noPeers) Connected() []peer.ID                         { return nil }
func (noPeers) Disconnect(peer.ID)                           {}

// A block asked twice of a slow peer (the first want timed out) may come
// twice, long after we got it: both copies are honest, late answers. A
// third copy was never asked for: an offence.
func TestBlockAskedTwiceMayComeTwice(t *testing.T) {
	now := time.Unix(5000, 0)
	c := bareClient(&now)
	p := peer.ID("slow provider")
	b := store.NewBlock(store.CodecBlock, []byte("a block"))
	d := message.Delivery{CID: b.CID, Data: b.Data, Address: message.LeafAddress(store.NewBlock(store.CodecRoot, []byte("t")).CID, 3)}
	st := c.peer(p)
	st.ask(d.Address.Key(), now.Add(c.lateGrace()))
	now = now.Add(10 * time.Second)
	st.ask(d.Address.Key(), now.Add(c.lateGrace()))
	now = now.Add(20 * time.Second)
	c.handleBlock(p, d)
	c.handleBlock(p, d)
	if s := c.Stats(); s.Unwanted != 2 || s.Unsolicited != 0 || c.offence[p].n != 0 {
		t.Fatalf("two copies of a block asked twice: %d late, %d unsolicited, %d offences; want 2, 0, 0", s.Unwanted, s.Unsolicited, c.offence[p].n)
	}
	c.handleBlock(p, d)
	if s := c.Stats(); s.Unsolicited != 1 || c.offence[p].n != 1 {
		t.Fatalf("a third copy: %d unsolicited, %d offences; want 1, 1", s.Unsolicited, c.offence[p].n)
	}
}

// Offences are forgiven one per forgiveEvery: offences far apart never add
// up to a ban, offences close together do.
func TestOffencesAreForgiven(t *testing.T) {
	now := time.Unix(5000, 0)
	c := bareClient(&now)
	p := peer.ID("peer")
	for i := range 10 {
		c.offend(p, now)
		if c.isBanned(p, now) {
			t.Fatalf("banned at offence %d, each %s after the last", i+1, forgiveEvery)
		}
		now = now.Add(forgiveEvery)
	}
	if got := c.offence[p].current(now).n; got != 0 {
		t.Fatalf("%d offences left after a quiet %s; want all forgiven", got, forgiveEvery)
	}
	c.offend(p, now)
	c.offend(p, now.Add(time.Minute))
	if c.offence[p].current(now.Add(forgiveEvery+time.Minute)).n != 1 {
		t.Fatalf("two offences, then one forgiveness: %+v", c.offence[p])
	}
	c.offend(p, now.Add(2*time.Minute))
	if !c.isBanned(p, now.Add(2*time.Minute)) {
		t.Fatalf("three offences within two minutes: not banned (%+v)", c.offence[p])
	}
}
