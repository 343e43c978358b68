package merkle

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// sha256Code is the multihash code of sha2-256, the only hash Codex trees
// (and meshfs) use; Codex writes it as field 1 of every proof.
const sha256Code = 0x12

// Field numbers of Codex's CodexProof message (codex/merkletree/codex/coders.nim).
const (
	fieldMcodec  protowire.Number = 1
	fieldIndex   protowire.Number = 2
	fieldNleaves protowire.Number = 3
	fieldNode    protowire.Number = 4 // repeated, each a message {1: bytes}
	fieldNodeVal protowire.Number = 1
)

// Marshal encodes the proof as Codex does: every scalar is written even when
// zero (nim-libp2p's minprotobuf has no notion of default values), then one
// nested message per path node.
func (p Proof) Marshal() []byte {
	n := 3*(1+protowire.SizeVarint(uint64(p.Leaves))) + len(p.Path)*(4+sha256.Size)
	b := make([]byte, 0, n)
	b = protowire.AppendTag(b, fieldMcodec, protowire.VarintType)
	b = protowire.AppendVarint(b, sha256Code)
	b = protowire.AppendTag(b, fieldIndex, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(p.Index))
	b = protowire.AppendTag(b, fieldNleaves, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(p.Leaves))
	for i := range p.Path {
		b = protowire.AppendTag(b, fieldNode, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(fieldNodeVal)+protowire.SizeBytes(sha256.Size)))
		b = protowire.AppendTag(b, fieldNodeVal, protowire.BytesType)
		b = protowire.AppendBytes(b, p.Path[i][:])
	}
	return b
}

// MaxProofLen is the most bytes Marshal writes for a proof in a tree of
// leaves leaves: what the store may be asked to keep per leaf.
func MaxProofLen(leaves int) int {
	return 3*(1+protowire.SizeVarint(uint64(leaves))) + Depth(leaves)*(4+sha256.Size)
}

// UnmarshalProof decodes a proof written by Codex or by Marshal. It reads
// fields the way Codex's decoder does (the last occurrence of a scalar wins,
// unknown fields and fields of an unexpected wire type are skipped), and
// then insists on what a usable proof needs: the sha2-256 codec, a leaves
// count in [1, MaxLeaves], an index below it, and exactly Depth(leaves)
// nodes of 32 bytes. The work done is bounded by the input length.
func UnmarshalProof(b []byte) (Proof, error) {
	var (
		p              Proof
		mcodec         uint64
		haveMcodec     bool
		index, nleaves uint64
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Proof{}, fmt.Errorf("merkle proof: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num <= fieldNleaves:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Proof{}, fmt.Errorf("merkle proof: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldMcodec:
				mcodec, haveMcodec = v, true
			case fieldIndex:
				index = v
			case fieldNleaves:
				nleaves = v
			}
		case typ == protowire.BytesType && num == fieldNode:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Proof{}, fmt.Errorf("merkle proof: node %d: %w", len(p.Path), protowire.ParseError(n))
			}
			b = b[n:]
			if len(p.Path) >= maxDepth {
				return Proof{}, fmt.Errorf("merkle proof: more than %d path nodes", maxDepth)
			}
			d, err := decodeNode(v)
			if err != nil {
				return Proof{}, fmt.Errorf("merkle proof: node %d: %w", len(p.Path), err)
			}
			p.Path = append(p.Path, d)
		default:
			n, err := skipField(num, typ, b)
			if err != nil {
				return Proof{}, fmt.Errorf("merkle proof: %w", err)
			}
			b = b[n:]
		}
	}
	if !haveMcodec || mcodec != sha256Code {
		return Proof{}, fmt.Errorf("merkle proof: hash codec 0x%x, want sha2-256 (0x12)", mcodec)
	}
	if nleaves < 1 || nleaves > MaxLeaves {
		return Proof{}, fmt.Errorf("merkle proof: leaves count %d out of range [1, %d]", nleaves, int64(MaxLeaves))
	}
	if index >= nleaves {
		return Proof{}, fmt.Errorf("merkle proof: index %d out of range for %d leaves", index, nleaves)
	}
	p.Index, p.Leaves = int(index), int(nleaves)
	if err := p.check(); err != nil {
		return Proof{}, err
	}
	return p, nil
}

// decodeNode reads the nested {1: bytes} message of one path node.
func decodeNode(b []byte) (Digest, error) {
	var (
		d     Digest
		found bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return d, protowire.ParseError(n)
		}
		b = b[n:]
		if num == fieldNodeVal && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return d, protowire.ParseError(n)
			}
			b = b[n:]
			if len(v) != sha256.Size {
				return d, fmt.Errorf("%d bytes, want %d", len(v), sha256.Size)
			}
			copy(d[:], v)
			found = true
			continue
		}
		n, err := skipField(num, typ, b)
		if err != nil {
			return d, err
		}
		b = b[n:]
	}
	if !found {
		return d, errors.New("no digest")
	}
	return d, nil
}

// skipField skips one field value and returns the bytes it took. Groups are
// refused, as Codex's minprotobuf refuses them (BadWireType), which also
// keeps skipping non-recursive.
func skipField(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
	if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
		return 0, fmt.Errorf("field %d: group wire type not supported", num)
	}
	n := protowire.ConsumeFieldValue(num, typ, b)
	if n < 0 {
		return 0, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
	}
	return n, nil
}
