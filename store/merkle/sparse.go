package merkle

import (
	"fmt"
)

// Sparse is part of one tree: the nodes learnt from some leaves and their
// proofs. It can prove a leaf whose proof was never seen, as long as every
// sibling along its path is known or can be computed from known children.
// This is how a block rebuilt by erasure decoding gets a proof, so that it
// can be stored and served like any other: the proofs of the blocks that
// fed the decoder (and the rebuilt blocks themselves) reveal the tree
// around it.
type Sparse struct {
	widths []int // nodes per level; widths[0] is the leaf count, the last is 1
	nodes  map[nodeKey]Digest
}

type nodeKey struct{ level, pos int }

// NewSparse starts an empty view of a tree of the given number of leaves.
func NewSparse(leaves int) (*Sparse, error) {
	if leaves < 1 || int64(leaves) > MaxLeaves {
		return nil, fmt.Errorf("merkle: sparse tree of %d leaves", leaves)
	}
	widths := []int{leaves}
	for w := leaves; len(widths) == 1 || w > 1; {
		w = (w + 1) / 2
		widths = append(widths, w)
	}
	return &Sparse{widths: widths, nodes: map[nodeKey]Digest{}}, nil
}

// AddLeaf records the digest of leaf i.
func (s *Sparse) AddLeaf(i int, d Digest) {
	if i >= 0 && i < s.widths[0] {
		s.nodes[nodeKey{0, i}] = d
	}
}

// AddProof records leaf p.Index with digest leaf, every node on its path
// and every sibling its proof holds.
func (s *Sparse) AddProof(leaf Digest, p Proof) error {
	if p.Leaves != s.widths[0] {
		return fmt.Errorf("merkle: proof for a %d-leaf tree, this one has %d", p.Leaves, s.widths[0])
	}
	if err := p.check(); err != nil {
		return err
	}
	h, j := leaf, p.Index
	for l := range p.Path {
		s.nodes[nodeKey{l, j}] = h
		sib := j ^ 1
		if sib < s.widths[l] {
			s.nodes[nodeKey{l, sib}] = p.Path[l]
		}
		h = s.combine(l, j, h, p.Path[l])
		j >>= 1
	}
	s.nodes[nodeKey{len(p.Path), 0}] = h
	return nil
}

// combine hashes node pos of level l (digest h) with its sibling into their
// parent, with Codex's keys.
func (s *Sparse) combine(l, pos int, h, sib Digest) Digest {
	pairKey := keyNone
	if l == 0 {
		pairKey = keyBottomLayer
	}
	switch {
	case pos&1 == 1:
		return compress(&sib, &h, pairKey)
	case pos == s.widths[l]-1:
		return compress(&h, &zero, pairKey+2)
	default:
		return compress(&h, &sib, pairKey)
	}
}

// node returns the digest of node pos at level l, computing it from its
// children where it is not known directly.
func (s *Sparse) node(l, pos int) (Digest, bool) {
	if d, ok := s.nodes[nodeKey{l, pos}]; ok {
		return d, true
	}
	if l == 0 {
		return Digest{}, false
	}
	left, ok := s.node(l-1, 2*pos)
	if !ok {
		return Digest{}, false
	}
	var right Digest
	if 2*pos+1 < s.widths[l-1] {
		if right, ok = s.node(l-1, 2*pos+1); !ok {
			return Digest{}, false
		}
	}
	d := s.combine(l-1, 2*pos, left, right)
	s.nodes[nodeKey{l, pos}] = d
	return d, true
}

// Proof builds the proof of leaf i from what is known.
func (s *Sparse) Proof(i int) (Proof, error) {
	if i < 0 || i >= s.widths[0] {
		return Proof{}, fmt.Errorf("merkle: proof for leaf %d of a %d-leaf tree", i, s.widths[0])
	}
	depth := len(s.widths) - 1
	path := make([]Digest, depth)
	j := i
	for l := range depth {
		if sib := j ^ 1; sib < s.widths[l] {
			d, ok := s.node(l, sib)
			if !ok {
				return Proof{}, fmt.Errorf("merkle: leaf %d: the sibling at level %d is not known", i, l)
			}
			path[l] = d
		}
		j >>= 1
	}
	return Proof{Index: i, Leaves: s.widths[0], Path: path}, nil
}

// Missing names what is lacking to prove leaf i: the leaves [from, to) of
// the lowest sibling subtree on its path that is not known. Learning the
// proof of any one of them (or, at the bottom level, its digest) fills it.
// ok is false when leaf i can be proved already.
func (s *Sparse) Missing(i int) (from, to int, ok bool) {
	if i < 0 || i >= s.widths[0] {
		return 0, 0, false
	}
	j := i
	for l := range len(s.widths) - 1 {
		if sib := j ^ 1; sib < s.widths[l] {
			if _, known := s.node(l, sib); !known {
				return sib << l, min((sib+1)<<l, s.widths[0]), true
			}
		}
		j >>= 1
	}
	return 0, 0, false
}
