package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// Network is a network store under test and what stands around it: Local
// is the store it layers over, Remote the store of another node it can
// fetch from over a real exchange. Blocks put into Remote are found by the
// network store, not by Local, until fetched.
type Network struct {
	Store  store.BlockStore
	Local  store.BlockStore
	Remote store.BlockStore
}

// NetworkOpener returns a fresh Network: empty stores, the two nodes able
// to reach each other.
type NetworkOpener func(t *testing.T) Network

// RunNetwork runs the network store's own part of the contract: reads of
// blocks only another node holds come back verified and are kept, what
// nobody holds is not found, and a reader that gives up stores nothing;
// at each of BlockSizes.
func RunNetwork(t *testing.T, open NetworkOpener) {
	forEachBlockSize(t, func(t *testing.T) { runNetworkCases(t, open) })
}

func runNetworkCases(t *testing.T, open NetworkOpener) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, n Network)
	}{
		{"FetchedLeavesAreKept", fetchedLeavesAreKept},
		{"HeldOnlyRemotelyIsNotLocal", heldOnlyRemotelyIsNotLocal},
		{"NobodyHasItIsNotFound", nobodyHasItIsNotFound},
		{"CancelledReadKeepsNothing", cancelledReadKeepsNothing},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

// remoteDataset is a dataset of n blocks with a real tree and proofs, put
// into st as an upload would.
type remoteDataset struct {
	tree   cid.Cid
	blocks []store.Block
}

func putRemoteDataset(t *testing.T, st store.BlockStore, n int, seed uint64) remoteDataset {
	t.Helper()
	d := remoteDataset{}
	digests := make([]merkle.Digest, n)
	for i := range n {
		b := newBlock(store.CodecBlock, seed*1000+uint64(i))
		d.blocks = append(d.blocks, b)
		digests[i] = sha256.Sum256(b.Data)
	}
	tr, err := merkle.New(digests)
	if err != nil {
		t.Fatal(err)
	}
	d.tree = tr.CID()
	for i, b := range d.blocks {
		p, err := tr.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, st, b)
		mustPutLeaf(t, st, store.Leaf{Tree: d.tree, Index: uint64(i), Block: b.CID, Proof: p.Marshal()})
	}
	return d
}

func fetchedLeavesAreKept(t *testing.T, n Network) {
	d := putRemoteDataset(t, n.Remote, 8, 1)
	for i, want := range d.blocks {
		l, b, err := n.Store.GetLeaf(t.Context(), d.tree, uint64(i))
		if err != nil {
			t.Fatalf("GetLeaf(%d) of a block only the other node holds: %v", i, err)
		}
		if !b.CID.Equals(want.CID) || !bytes.Equal(b.Data, want.Data) || !l.Block.Equals(want.CID) {
			t.Fatalf("GetLeaf(%d) = block %s; want %s", i, b.CID, want.CID)
		}
		proof, err := merkle.UnmarshalProof(l.Proof)
		if err != nil {
			t.Fatalf("GetLeaf(%d): proof: %v", i, err)
		}
		root, _ := store.Digest(d.tree)
		if err := proof.Verify(sha256.Sum256(b.Data), root); err != nil {
			t.Fatalf("GetLeaf(%d): proof does not verify: %v", i, err)
		}
	}
	for i, b := range d.blocks {
		if held, err := n.Local.HasLeaf(t.Context(), d.tree, uint64(i)); err != nil || !held {
			t.Errorf("leaf %d fetched but not kept locally: %v, %v", i, held, err)
		}
		if got, err := n.Local.Get(t.Context(), b.CID); err != nil || !bytes.Equal(got.Data, b.Data) {
			t.Errorf("block %d fetched but not kept locally: %v", i, err)
		}
	}
}

func heldOnlyRemotelyIsNotLocal(t *testing.T, n Network) {
	d := putRemoteDataset(t, n.Remote, 2, 2)
	// Has, HasLeaf and listing are the local store's: a block on the
	// network is not held here until it is read.
	if held, err := n.Store.HasLeaf(t.Context(), d.tree, 0); err != nil || held {
		t.Errorf("HasLeaf of a block only the other node holds = %v, %v; want false", held, err)
	}
	if held, err := n.Store.Has(t.Context(), d.blocks[1].CID); err != nil || held {
		t.Errorf("Has of a block only the other node holds = %v, %v; want false", held, err)
	}
}

func nobodyHasItIsNotFound(t *testing.T, n Network) {
	_ = putRemoteDataset(t, n.Remote, 2, 3)
	if _, _, err := n.Store.GetLeaf(t.Context(), tree(4040), 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetLeaf of a tree nobody has = %v; want ErrNotFound", err)
	}
	if _, err := n.Store.Get(t.Context(), newBlock(store.CodecManifest, 4041).CID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a block nobody has = %v; want ErrNotFound", err)
	}
}

func cancelledReadKeepsNothing(t *testing.T, n Network) {
	d := putRemoteDataset(t, n.Remote, 2, 5)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := n.Store.GetLeaf(ctx, d.tree, 0); err == nil {
		t.Fatal("GetLeaf with a cancelled context succeeded")
	}
	if held, err := n.Local.HasLeaf(t.Context(), d.tree, 0); err != nil || held {
		t.Errorf("a cancelled read kept its block: %v, %v", held, err)
	}
}
