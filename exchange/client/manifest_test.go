package client

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/manifest"
)

// The peer that delivered a manifest is asked for the first block of its
// tree with a WantBlock at once: no WantHave round trip before a cold
// read's first byte.
func TestManifestDelivererIsAskedForItsTreeFirst(t *testing.T) {
	c, net, _ := newTestClient(t, Options{})
	p := peer.ID("provider")
	net.connect(p)
	tree := testTree("t")
	mb, err := manifest.New(tree, 4096, 3*4096).Block()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := message.CIDAddress(mb.CID)
	got := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, mb.CID)
		got <- err
	}()
	net.expect(t, p, a, "want-block") // guessManifest
	c.handleBlock(p, message.Delivery{CID: mb.CID, Data: mb.Data, Address: a})
	if err := <-got; err != nil {
		t.Fatalf("manifest: %v", err)
	}

	go func() { _, _, _ = c.GetLeaf(ctx, tree, 0, store.Read) }()
	net.expect(t, p, message.LeafAddress(tree, 0), "want-block")
}

// manifestGet is a Get of a manifest nobody is known to hold, from a client
// connected to two peers, as far as its first asks.
type manifestGet struct {
	c              *Client
	net            *testNet
	mb             store.Block
	a              message.Address
	got            chan error
	first          map[peer.ID]string // what each peer was asked first
	guessed, other peer.ID            // the one asked for the block, and the other
}

func getManifest(t *testing.T) manifestGet {
	t.Helper()
	c, net, _ := newTestClient(t, Options{})
	p1, p2 := peer.ID("first"), peer.ID("second")
	net.connect(p1)
	net.connect(p2)
	mb, err := manifest.New(testTree("t"), 4096, 4096).Block()
	if err != nil {
		t.Fatal(err)
	}
	g := manifestGet{c: c, net: net, mb: mb, a: message.CIDAddress(mb.CID), got: make(chan error, 1)}
	go func() {
		_, err := c.Get(context.Background(), mb.CID)
		g.got <- err
	}()
	g.first = nextKinds(t, net, g.a, 2)
	g.guessed, g.other = p1, p2
	if g.first[p2] == "want-block" {
		g.guessed, g.other = p2, p1
	}
	return g
}

// A manifest nobody is known to hold goes as a WantBlock to one connected
// peer and as WantHave to the others; a wrong guess costs its DontHave,
// after which a peer that said Have gets the WantBlock.
func TestManifestGuessedThenAskedOfAHolder(t *testing.T) {
	g := getManifest(t)
	c, net, mb, a, got, kinds := g.c, g.net, g.mb, g.a, g.got, g.first
	guessed, other := g.guessed, g.other
	if kinds[guessed] != "want-block" || kinds[other] != "want-have" {
		t.Fatalf("first asks %v; want one want-block and one want-have", kinds)
	}
	c.HandlePresences(guessed, []message.Presence{{Address: a, Type: message.DontHave}})
	c.HandlePresences(other, []message.Presence{{Address: a, Type: message.Have}})
	net.expect(t, other, a, "want-block")
	c.handleBlock(other, message.Delivery{CID: mb.CID, Data: mb.Data, Address: a})
	if err := <-got; err != nil {
		t.Fatalf("manifest: %v", err)
	}
}

// A guessed peer that says nothing holds the manifest up no longer than it
// takes another to say Have: the guess is cancelled and the WantBlock goes
// to the peer that has it.
func TestSilentGuessGivesWayToAHolder(t *testing.T) {
	g := getManifest(t)
	c, net, mb, a, got := g.c, g.net, g.mb, g.a, g.got
	guessed, other := g.guessed, g.other
	c.HandlePresences(other, []message.Presence{{Address: a, Type: message.Have}})
	then := nextKinds(t, net, a, 2)
	if then[guessed] != "cancel" || then[other] != "want-block" {
		t.Fatalf("after a Have from the other peer: %v; want a cancel to the silent guess and the want-block to the holder", then)
	}
	c.handleBlock(other, message.Delivery{CID: mb.CID, Data: mb.Data, Address: a})
	if err := <-got; err != nil {
		t.Fatalf("manifest: %v", err)
	}
}

// nextKinds reads the client's next n messages, each one entry for a,
// and returns what each peer got. The wait is bounded only so that a
// client that never sends fails instead of hanging.
func nextKinds(t *testing.T, net *testNet, a message.Address, n int) map[peer.ID]string {
	t.Helper()
	kinds := map[peer.ID]string{}
	for range n {
		var s sent
		select {
		case s = <-net.sent:
		case <-time.After(10 * time.Second): // a bound, so that a client that never sends fails
			t.Fatalf("got %v; want %d messages for %s", kinds, n, a)
		}
		es := s.m.WantList.Entries
		if len(es) != 1 || es[0].Address.Key() != a.Key() {
			t.Fatalf("sent %+v to %s; want one entry for %s", es, s.to, a)
		}
		kinds[s.to] = entryKind(es[0])
	}
	return kinds
}

// A manifest's tree is taken from verified manifests only: a block of
// another codec, or one that does not decode, names no tree.
func TestManifestTreeOnlyFromManifests(t *testing.T) {
	tree := testTree("t")
	mb, err := manifest.New(tree, 4096, 4096).Block()
	if err != nil {
		t.Fatal(err)
	}
	if got := manifestTree(store.Leaf{}, mb, nil); !got.Equals(tree) {
		t.Errorf("tree of a manifest: %v, want %v", got, tree)
	}
	if got := manifestTree(store.Leaf{}, mb, errBadBlock); got.Defined() {
		t.Errorf("tree of a block that failed verification: %v", got)
	}
	raw := store.NewBlock(store.CodecBlock, mb.Data)
	if got := manifestTree(store.Leaf{}, raw, nil); got.Defined() {
		t.Errorf("tree of a data block: %v", got)
	}
	junk := store.NewBlock(store.CodecManifest, []byte("not a manifest"))
	if got := manifestTree(store.Leaf{}, junk, nil); got.Defined() {
		t.Errorf("tree of an undecodable manifest: %v", got)
	}
}
