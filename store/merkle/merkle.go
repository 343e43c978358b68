// Package merkle builds Codex's dataset tree: a keyed binary Merkle tree over
// the sha256 digests of a dataset's blocks, whose root names the dataset
// (the tree CID), and the inclusion proofs that let a receiver check a single
// block against that root.
//
// The rules follow nim-codex (codex/merkletree/merkletree.nim and
// codex/merkletree/codex/codex.nim) so that the same blocks give the same
// tree CID and the same proofs on both:
//
//   - two nodes combine as sha256(left ‖ right ‖ key) with a one-byte key;
//   - the key is 0x01 on the bottom layer and 0x00 above;
//   - an odd last node is combined with 32 zero bytes, key 0x03 on the bottom
//     layer and 0x02 above;
//   - the bottom layer is always combined, even when it has a single leaf,
//     so a one-leaf tree has root sha256(leaf ‖ 0^32 ‖ 0x03); upper layers stop
//     at one node.
package merkle

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// Digest is a sha256 digest: a leaf (a block's digest) or an inner node.
type Digest = [sha256.Size]byte

// Compression keys, Codex's ByteTreeKey values.
const (
	keyNone              byte = 0x00
	keyBottomLayer       byte = 0x01
	keyOdd               byte = 0x02
	keyOddAndBottomLayer byte = 0x03
)

// MaxLeaves bounds the number of leaves a proof may claim. 2^40 blocks of
// 64 KiB are 64 PiB, far beyond any dataset, and the bound keeps depth and
// index arithmetic of decoded proofs well inside an int.
const MaxLeaves = 1 << 40

// maxDepth is the path length of a tree with MaxLeaves leaves.
const maxDepth = 40

var zero Digest

// ErrInvalidProof is wrapped by every error Verify returns for a proof that
// does not prove the leaf under the root.
var ErrInvalidProof = errors.New("invalid merkle proof")

func compress(left, right *Digest, key byte) Digest {
	var buf [2*sha256.Size + 1]byte
	copy(buf[:sha256.Size], left[:])
	copy(buf[sha256.Size:2*sha256.Size], right[:])
	buf[2*sha256.Size] = key
	return sha256.Sum256(buf[:])
}

// Tree is a complete dataset tree. It keeps every layer (about 2n digests
// for n leaves) so that any proof can be cut out of it without rehashing.
// A Tree is immutable and safe for concurrent use.
type Tree struct {
	layers [][]Digest // layers[0] are the leaves, the last layer is the root
}

// New builds the tree over the given leaf digests (not hashed again). The
// leaves are copied.
func New(leaves []Digest) (*Tree, error) {
	if len(leaves) == 0 {
		return nil, errors.New("merkle: tree needs at least one leaf")
	}
	if int64(len(leaves)) > MaxLeaves {
		return nil, fmt.Errorf("merkle: %d leaves, more than %d", len(leaves), MaxLeaves)
	}
	layer := append([]Digest(nil), leaves...)
	t := &Tree{layers: [][]Digest{layer}}
	bottom := true
	// Codex combines the bottom layer even when it is a single leaf; only the
	// upper layers stop once one node is left.
	for bottom || len(layer) > 1 {
		pairKey, oddKey := keyNone, keyOdd
		if bottom {
			pairKey, oddKey = keyBottomLayer, keyOddAndBottomLayer
		}
		next := make([]Digest, (len(layer)+1)/2)
		for i := 0; i+1 < len(layer); i += 2 {
			next[i/2] = compress(&layer[i], &layer[i+1], pairKey)
		}
		if len(layer)%2 == 1 {
			next[len(next)-1] = compress(&layer[len(layer)-1], &zero, oddKey)
		}
		t.layers = append(t.layers, next)
		layer = next
		bottom = false
	}
	return t, nil
}

// Root is the tree's root digest.
func (t *Tree) Root() Digest { return t.layers[len(t.layers)-1][0] }

// Leaves is the number of leaves.
func (t *Tree) Leaves() int { return len(t.layers[0]) }

// Leaf returns leaf i; it panics when i is out of range, like a slice.
func (t *Tree) Leaf(i int) Digest { return t.layers[0][i] }

// CID is the tree CID: CIDv1, codex-root, sha2-256 multihash of the root.
func (t *Tree) CID() cid.Cid { return store.CIDFromDigest(store.CodecRoot, t.Root()) }

// Proof returns the inclusion proof of leaf i: the siblings bottom-up, with
// 32 zero bytes where a node has no sibling (Codex's getProof).
func (t *Tree) Proof(i int) (Proof, error) {
	n := t.Leaves()
	if i < 0 || i >= n {
		return Proof{}, fmt.Errorf("merkle: proof for leaf %d of a %d-leaf tree", i, n)
	}
	depth := len(t.layers) - 1
	path := make([]Digest, depth)
	k := i
	for d := range depth {
		if s := k ^ 1; s < len(t.layers[d]) {
			path[d] = t.layers[d][s]
		} // else: no sibling, path[d] stays zero
		k >>= 1
	}
	return Proof{Index: i, Leaves: n, Path: path}, nil
}

// Depth is the length of a proof path in a tree of n ≥ 1 leaves: the number
// of combining steps from the leaves to the root, at least one because the
// bottom layer is always combined.
func Depth(n int) int {
	d := 0
	for {
		n = (n + 1) / 2
		d++
		if n <= 1 {
			return d
		}
	}
}

// Proof is an inclusion proof of one leaf: its index, the number of leaves
// in the tree, and the sibling path from the bottom up.
//
// Verify binds the leaf to its index, but Leaves only changes the hashing on
// the right edge of the tree (where odd nodes are keyed), so the proof of an
// inner leaf stays valid for other leaf counts of the same depth. This is
// Codex's scheme; a receiver that knows the dataset's block count (from the
// manifest) must compare it with Leaves itself.
type Proof struct {
	Index, Leaves int
	Path          []Digest
}

// check validates the shape of the proof against its own claims.
func (p Proof) check() error {
	if p.Leaves < 1 || int64(p.Leaves) > MaxLeaves {
		return fmt.Errorf("%w: leaves count %d out of range [1, %d]", ErrInvalidProof, p.Leaves, int64(MaxLeaves))
	}
	if p.Index < 0 || p.Index >= p.Leaves {
		return fmt.Errorf("%w: index %d out of range for %d leaves", ErrInvalidProof, p.Index, p.Leaves)
	}
	if want := Depth(p.Leaves); len(p.Path) != want {
		return fmt.Errorf("%w: path has %d nodes, a %d-leaf tree needs %d", ErrInvalidProof, len(p.Path), p.Leaves, want)
	}
	return nil
}

// RootFor recomputes the root that the proof and leaf lead to, applying the
// same keys as the tree builder (Codex's reconstructRoot).
func (p Proof) RootFor(leaf Digest) (Digest, error) {
	if err := p.check(); err != nil {
		return Digest{}, err
	}
	h := leaf
	j, m := p.Index, p.Leaves
	pairKey := keyBottomLayer
	for d := range p.Path {
		s := &p.Path[d]
		switch {
		case j&1 == 1:
			h = compress(s, &h, pairKey)
		case j == m-1:
			// The last node of an odd layer: Codex pairs it with zeros.
			// A path that carries anything else there is not one Codex or
			// we would produce, so say so rather than report a root mismatch.
			if *s != zero {
				return Digest{}, fmt.Errorf("%w: level %d has no sibling but the path holds a non-zero node", ErrInvalidProof, d)
			}
			h = compress(&h, s, pairKey+2)
		default:
			h = compress(&h, s, pairKey)
		}
		pairKey = keyNone
		j >>= 1
		m = (m + 1) >> 1
	}
	return h, nil
}

// Verify checks that leaf sits at p.Index of the tree with the given root.
func (p Proof) Verify(leaf, root Digest) error {
	got, err := p.RootFor(leaf)
	if err != nil {
		return err
	}
	if got != root {
		return fmt.Errorf("%w: leaf %d of %d leads to root %x, want %x", ErrInvalidProof, p.Index, p.Leaves, got[:8], root[:8])
	}
	return nil
}
