package client

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// Nothing a peer sends is trusted until its hash and proof check out: every
// way of lying about a block is caught, and the honest delivery passes.
func TestVerifyDelivery(t *testing.T) {
	blocks := make([][]byte, 5)
	leaves := make([]merkle.Digest, len(blocks))
	for i := range blocks {
		blocks[i] = bytes.Repeat([]byte{byte(i + 1)}, 1024)
		leaves[i] = sha256.Sum256(blocks[i])
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	proof := func(i int) []byte {
		p, err := tree.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		return p.Marshal()
	}
	good := func(i int) message.Delivery {
		b := store.NewBlock(store.CodecBlock, blocks[i])
		return message.Delivery{CID: b.CID, Data: blocks[i], Address: message.LeafAddress(tree.CID(), uint64(i)), Proof: proof(i)}
	}
	manifest := store.NewBlock(store.CodecManifest, []byte("manifest bytes"))
	other := store.NewBlock(store.CodecManifest, []byte("another manifest"))

	cases := []struct {
		name string
		d    func() message.Delivery
		ok   bool
	}{
		{"honest leaf", func() message.Delivery { return good(2) }, true},
		{"honest manifest", func() message.Delivery {
			return message.Delivery{CID: manifest.CID, Data: manifest.Data, Address: message.CIDAddress(manifest.CID)}
		}, true},
		{"flipped byte", func() message.Delivery { d := good(2); d.Data = bytes.Clone(d.Data); d.Data[7] ^= 1; return d }, false},
		{"truncated", func() message.Delivery { d := good(2); d.Data = d.Data[:500]; return d }, false},
		{"another block of the tree", func() message.Delivery {
			d := good(3)
			d.Address = message.LeafAddress(tree.CID(), 2)
			return d
		}, false},
		{"proof of another index", func() message.Delivery { d := good(2); d.Proof = proof(3); return d }, false},
		{"no proof", func() message.Delivery { d := good(2); d.Proof = nil; return d }, false},
		{"garbage proof", func() message.Delivery { d := good(2); d.Proof = []byte{1, 2, 3}; return d }, false},
		{"consistent block from another tree", func() message.Delivery {
			other, _ := merkle.New([]merkle.Digest{leaves[4], leaves[2]})
			p, _ := other.Proof(1)
			d := good(2)
			d.Proof = p.Marshal()
			return d
		}, false},
		{"wrong manifest for the CID asked", func() message.Delivery {
			return message.Delivery{CID: other.CID, Data: other.Data, Address: message.CIDAddress(manifest.CID)}
		}, false},
	}
	root := tree.Root()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d()
			r := root
			if !d.Address.Leaf {
				r = merkle.Digest{}
			}
			leaf, b, err := verify(d, r)
			if tc.ok {
				if err != nil {
					t.Fatalf("honest delivery rejected: %v", err)
				}
				if !bytes.Equal(b.Data, d.Data) || (d.Address.Leaf && (leaf.Index != d.Address.Index || !bytes.Equal(leaf.Proof, d.Proof))) {
					t.Fatalf("verified block %v / leaf %+v do not match the delivery", b.CID, leaf)
				}
				return
			}
			if !errors.Is(err, errBadBlock) {
				t.Fatalf("bad delivery: err %v, want a bad-block error", err)
			}
		})
	}
}

// A proof that verifies is kept as we encode it, not as the peer sent it:
// unknown fields a peer adds (up to what the wire allows) never reach the
// store.
func TestVerifiedProofIsReencoded(t *testing.T) {
	blocks := [][]byte{bytes.Repeat([]byte{1}, 512), bytes.Repeat([]byte{2}, 512), bytes.Repeat([]byte{3}, 512)}
	leaves := make([]merkle.Digest, len(blocks))
	for i, b := range blocks {
		leaves[i] = sha256.Sum256(b)
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tree.Proof(1)
	if err != nil {
		t.Fatal(err)
	}
	canonical := p.Marshal()
	// Field 15, length-delimited, 4 KiB: unknown to the proof's message.
	padded := protowire.AppendBytes(protowire.AppendTag(bytes.Clone(canonical), 15, protowire.BytesType), make([]byte, 4096))
	b := store.NewBlock(store.CodecBlock, blocks[1])
	leaf, _, err := verify(message.Delivery{CID: b.CID, Data: blocks[1], Address: message.LeafAddress(tree.CID(), 1), Proof: padded}, tree.Root())
	if err != nil {
		t.Fatalf("a valid proof with an unknown field was rejected: %v", err)
	}
	if !bytes.Equal(leaf.Proof, canonical) {
		t.Fatalf("leaf keeps a proof of %d bytes; want the %d of its own encoding", len(leaf.Proof), len(canonical))
	}
}
