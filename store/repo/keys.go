package repo

import (
	"encoding/binary"
	"errors"

	"github.com/ipfs/go-cid"
)

// Key layout. One-byte prefixes keep keys short and group each kind together
// so that a prefix scan touches only that kind. CID bytes are self-delimiting
// (version, codec and multihash length are all varint-prefixed), so a tree CID
// followed by a fixed 8-byte index is unambiguous.
const (
	// 'b' + CID → block bytes. Kept apart from the index so that listing and
	// Has never pull 64 KiB values off disk.
	prefixData = 'b'
	// 'i' + CID → uvarint refs, uvarint size. Exactly one per held block.
	prefixIndex = 'i'
	// 'l' + tree CID + big-endian index → uvarint len, block CID, proof.
	// Big-endian so that a tree's leaves sort by position.
	prefixLeaf = 'l'
)

var (
	// keyUsage → uvarint blocks, uvarint bytes. Written in the same batch as
	// every change it accounts for; its absence means "recount on open".
	keyUsage = []byte("u")
	// keyFormat → one byte, the on-disk format version.
	keyFormat = []byte("v")
)

const formatVersion = 1

var errBadRecord = errors.New("malformed record")

func dataKey(c cid.Cid) []byte  { return prefixed(prefixData, c) }
func indexKey(c cid.Cid) []byte { return prefixed(prefixIndex, c) }

func prefixed(p byte, c cid.Cid) []byte {
	k := c.KeyString()
	b := make([]byte, 1+len(k))
	b[0] = p
	copy(b[1:], k)
	return b
}

func leafKey(tree cid.Cid, index uint64) []byte {
	k := tree.KeyString()
	b := make([]byte, 1+len(k)+8)
	b[0] = prefixLeaf
	copy(b[1:], k)
	binary.BigEndian.PutUint64(b[1+len(k):], index)
	return b
}

// codecPrefix is the key prefix of every index entry of a codec: CIDv1 bytes
// start with the version (1) and then the codec, both uvarints.
func codecPrefix(codec uint64) []byte {
	b := []byte{prefixIndex, 1}
	return binary.AppendUvarint(b, codec)
}

type blockIndex struct {
	refs uint64 // leaves naming this block
	size uint64 // len of its data
}

func (x blockIndex) encode() []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, x.refs)
	return binary.AppendUvarint(b, x.size)
}

func decodeIndex(b []byte) (blockIndex, error) {
	refs, n := binary.Uvarint(b)
	if n <= 0 {
		return blockIndex{}, errBadRecord
	}
	size, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return blockIndex{}, errBadRecord
	}
	return blockIndex{refs: refs, size: size}, nil
}

type usage struct{ blocks, bytes uint64 }

func (u usage) encode() []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, u.blocks)
	return binary.AppendUvarint(b, u.bytes)
}

func decodeUsage(b []byte) (usage, error) {
	x, err := decodeIndex(b) // same shape: two uvarints
	return usage{blocks: x.refs, bytes: x.size}, err
}

func encodeLeaf(block cid.Cid, proof []byte) []byte {
	k := block.KeyString()
	b := make([]byte, 0, binary.MaxVarintLen64+len(k)+len(proof))
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	return append(b, proof...)
}

// decodeLeaf returns the block CID and a copy of the proof (v may be a
// buffer that goleveldb reuses).
func decodeLeaf(v []byte) (cid.Cid, []byte, error) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return cid.Undef, nil, errBadRecord
	}
	c, err := cid.Cast(v[w : w+int(n)])
	if err != nil {
		return cid.Undef, nil, errBadRecord
	}
	return c, append([]byte(nil), v[w+int(n):]...), nil
}
