package merkle

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

// A leaf whose proof was never seen is proved from its neighbours' proofs,
// exactly as the full tree would prove it, for every tree size and every
// leaf, the odd right edges included.
func TestSparseProvesUnseenLeaves(t *testing.T) {
	for n := 1; n <= 40; n++ {
		leaves := make([]Digest, n)
		for i := range leaves {
			leaves[i] = sha256.Sum256([]byte(fmt.Sprint(n, "/", i)))
		}
		full, err := New(leaves)
		if err != nil {
			t.Fatal(err)
		}
		for lost := range n {
			s, err := NewSparse(n)
			if err != nil {
				t.Fatal(err)
			}
			// What a decoder knows: every other leaf's proof, and the
			// digest of the leaf it rebuilt.
			for i := range n {
				if i == lost {
					continue
				}
				p, _ := full.Proof(i)
				if err := s.AddProof(leaves[i], p); err != nil {
					t.Fatal(err)
				}
			}
			s.AddLeaf(lost, leaves[lost])
			got, err := s.Proof(lost)
			if err != nil {
				t.Fatalf("n=%d leaf %d: %v", n, lost, err)
			}
			if err := got.Verify(leaves[lost], full.Root()); err != nil {
				t.Fatalf("n=%d leaf %d: built proof does not verify: %v", n, lost, err)
			}
		}
	}
}

// With only a few proofs known, leaves far from them cannot be proved, and
// Sparse says so instead of inventing nodes.
func TestSparseRefusesUnknownSiblings(t *testing.T) {
	leaves := make([]Digest, 16)
	for i := range leaves {
		leaves[i] = sha256.Sum256([]byte{byte(i)})
	}
	full, _ := New(leaves)
	s, _ := NewSparse(16)
	p, _ := full.Proof(0)
	if err := s.AddProof(leaves[0], p); err != nil {
		t.Fatal(err)
	}
	s.AddLeaf(9, leaves[9])
	if _, err := s.Proof(9); err == nil {
		t.Fatal("proof of leaf 9 built without its sibling 8 being known")
	}
	s.AddLeaf(8, leaves[8])
	// Level 1 sibling of 9 is node (1,5) = leaves 10,11: still unknown.
	if _, err := s.Proof(9); err == nil {
		t.Fatal("proof of leaf 9 built without leaves 10 and 11")
	}
	s.AddLeaf(10, leaves[10])
	s.AddLeaf(11, leaves[11])
	// Level 2 sibling is node (2,3) = leaves 12..15; level 3 comes from
	// folding leaf 0's proof.
	if _, err := s.Proof(9); err == nil {
		t.Fatal("proof of leaf 9 built without leaves 12 to 15")
	}
	for i := 12; i < 16; i++ {
		s.AddLeaf(i, leaves[i])
	}
	got, err := s.Proof(9)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(leaves[9], full.Root()); err != nil {
		t.Fatal(err)
	}
	if err := s.AddProof(leaves[0], Proof{Index: 0, Leaves: 15, Path: p.Path}); err == nil {
		t.Error("a proof of a tree with another leaf count was accepted")
	}
}
