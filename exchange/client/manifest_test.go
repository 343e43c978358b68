package client

import (
	"context"
	"testing"

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
	net.expect(t, p, a, "want-have")
	c.HandlePresences(p, []message.Presence{{Address: a, Type: message.Have}})
	net.expect(t, p, a, "want-block")
	c.handleBlock(p, message.Delivery{CID: mb.CID, Data: mb.Data, Address: a})
	if err := <-got; err != nil {
		t.Fatalf("manifest: %v", err)
	}

	// Ends with the test (t.Context), never answered.
	go func() { _, _, _ = c.GetLeaf(t.Context(), tree, 0, store.Read) }()
	net.expect(t, p, message.LeafAddress(tree, 0), "want-block")
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
