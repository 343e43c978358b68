package client

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/meshfs/meshfs/exchange/message"
	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// fuzzTree is the dataset every fuzzed delivery claims to belong to.
func fuzzTree(tb testing.TB) ([][]byte, []merkle.Digest, *merkle.Tree) {
	blocks := make([][]byte, 5)
	leaves := make([]merkle.Digest, len(blocks))
	for i := range blocks {
		blocks[i] = bytes.Repeat([]byte{byte(i + 1)}, 64)
		leaves[i] = sha256.Sum256(blocks[i])
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		tb.Fatal(err)
	}
	return blocks, leaves, tree
}

// checkVerdict is the property every fuzz target asserts of verify: it
// never accepts a block whose bytes do not hash to its CID, nor a CID
// delivery other than the one asked for, nor a dataset block that is not
// the tree's leaf at the address's index.
func checkVerdict(t *testing.T, d message.Delivery, leaves []merkle.Digest, root merkle.Digest) {
	leaf, b, err := verify(d, root)
	if err != nil {
		return
	}
	sum := sha256.Sum256(d.Data)
	if !store.CIDFromDigest(d.CID.Type(), sum).Equals(d.CID) || !b.CID.Equals(d.CID) || !bytes.Equal(b.Data, d.Data) {
		t.Fatalf("accepted %s whose bytes hash to %x", store.CIDText(d.CID), sum)
	}
	if !d.Address.Leaf {
		if !d.Address.CID.Equals(d.CID) {
			t.Fatalf("accepted %s for %s", store.CIDText(d.CID), d.Address)
		}
		return
	}
	if d.Address.Index >= uint64(len(leaves)) || sum != leaves[d.Address.Index] {
		t.Fatalf("accepted a block with digest %x as leaf %d", sum, d.Address.Index)
	}
	if leaf.Index != d.Address.Index || !leaf.Block.Equals(d.CID) || !leaf.Tree.Equals(d.Address.Tree) {
		t.Fatalf("accepted leaf %+v does not match the delivery", leaf)
	}
}

// FuzzVerifyFields builds a delivery from fuzzed parts. With hashData the
// CID is the hash of the data, so the fuzzer gets past the hash check and
// exercises the proof and index checks.
func FuzzVerifyFields(f *testing.F) {
	blocks, leaves, tree := fuzzTree(f)
	for i := range blocks {
		p, _ := tree.Proof(i)
		f.Add(blocks[i], p.Marshal(), uint64(i), true, true)
		f.Add(blocks[i], p.Marshal(), uint64(i+1), true, true)
		f.Add(blocks[i][:10], p.Marshal(), uint64(i), true, false)
	}
	f.Add([]byte("manifest"), []byte(nil), uint64(0), false, true)
	f.Fuzz(func(t *testing.T, data, proof []byte, index uint64, leaf, hashData bool) {
		c := store.NewBlock(store.CodecBlock, data).CID
		if !hashData {
			c = store.NewBlock(store.CodecBlock, append([]byte("not "), data...)).CID
		}
		d := message.Delivery{CID: c, Data: data, Proof: proof, Address: message.LeafAddress(tree.CID(), index)}
		root := tree.Root()
		if !leaf {
			d.CID = store.NewBlock(store.CodecManifest, data).CID
			if !hashData {
				d.CID = store.NewBlock(store.CodecManifest, append([]byte("not "), data...)).CID
			}
			d.Address = message.CIDAddress(store.NewBlock(store.CodecManifest, data).CID)
			root = merkle.Digest{}
		}
		checkVerdict(t, d, leaves, root)
	})
}

// FuzzVerifyMessage feeds verify the deliveries of arbitrary message bytes,
// as a peer would send them: whatever decodes is judged against our tree.
func FuzzVerifyMessage(f *testing.F) {
	blocks, leaves, tree := fuzzTree(f)
	for i := range blocks {
		p, _ := tree.Proof(i)
		b := store.NewBlock(store.CodecBlock, blocks[i])
		good := message.Delivery{CID: b.CID, Data: blocks[i], Proof: p.Marshal(), Address: message.LeafAddress(tree.CID(), uint64(i))}
		f.Add((&message.Message{Blocks: []message.Delivery{good}}).AppendMarshal(nil))
		bad := good
		bad.Address.Index = uint64(len(blocks) - 1 - i)
		f.Add((&message.Message{Blocks: []message.Delivery{bad}}).AppendMarshal(nil))
	}
	m := store.NewBlock(store.CodecManifest, []byte("manifest"))
	f.Add((&message.Message{Blocks: []message.Delivery{{CID: m.CID, Data: m.Data, Address: message.CIDAddress(m.CID)}}}).AppendMarshal(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := message.Unmarshal(b)
		if err != nil {
			return
		}
		for _, d := range msg.Blocks {
			root := tree.Root()
			if !d.Address.Leaf {
				root = merkle.Digest{}
			} else if !d.Address.Tree.Equals(tree.CID()) {
				// Another tree: we would only judge it against that
				// tree's root, which we do not know; use ours anyway.
				d.Address.Tree = tree.CID()
			}
			checkVerdict(t, d, leaves, root)
		}
	})
}
