package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// Key layout. One-byte prefixes keep keys short and group each kind together
// so that a prefix scan touches only that kind. CID bytes are self-delimiting
// (version, codec and multihash length are all varint-prefixed), so a tree CID
// followed by a fixed 8-byte index is unambiguous.
//
// Block bytes are not in the database at all: they are records in pack files
// (see packs.go), and a block's index entry, which says where its record is,
// is what makes it held.
const (
	// 'i' + CID → uvarint refs, size, pack, offset. Exactly one per held
	// block; offset is where its bytes start in packs/<pack>.pack.
	prefixIndex = 'i'
	// 'k' + big-endian uint32 pack number → uvarint live blocks, live
	// bytes, end. One per pack that has ever had a block committed into it
	// and has not been retired by compaction (see packMeta).
	prefixPack = 'k'
	// 'l' + tree CID + big-endian index → uvarint len, block CID, proof.
	// Big-endian so that a tree's leaves sort by position.
	prefixLeaf = 'l'
	// 'r' + manifest CID → one flags byte (bit 0: pinned), uvarint last
	// access in Unix milliseconds: the node's retention record of a
	// dataset (see store.Retention). Added without a format change: a
	// repository written before it simply has none, and the node treats a
	// dataset without a record as pinned. Recount and Verify leave these
	// keys alone.
	prefixRetention = 'r'
	// 'n' + tree CID + manifest CID → nothing: the record of that manifest
	// names that tree. Written and removed in the same batch as the
	// record, so that whether any dataset names a tree is one seek.
	// Repositories written before it have none: the node rewrites their
	// records with the tree, which adds them.
	prefixTreeName = 'n'
)

var (
	// keyUsage → uvarint blocks, uvarint bytes. Written in the same batch as
	// every change it accounts for; its absence means "recount on open".
	keyUsage = []byte("u")
	// keyFormat → one byte, the on-disk format version.
	keyFormat = []byte("v")
)

// formatVersion 5 keeps block bytes in append-only pack files and only the
// index in LevelDB, counts the leaves' proofs in the usage record, and may
// keep a block's trailing zeros as a count (records of the second form,
// index entries of five fields). Version 4 is the same without the count:
// it reads as version 5 and is marked so on open, which an older meshfs
// then refuses rather than misread. Version 3 is 4 but for the proofs'
// count: it is recounted on open. Version 1 kept the bytes as LevelDB
// values and version 2 one file per block; neither was released, so there
// is no migration from them (see load).
const (
	formatVersion         = 5
	formatWholeBlocks     = 4
	formatProofsUncounted = 3
	formatValues          = 1
	formatFiles           = 2
)

var errBadRecord = errors.New("malformed record")

// cidKey is prefix followed by c's bytes: the key of a record about c.
func cidKey(prefix byte, c cid.Cid) []byte {
	k := c.KeyString()
	return append(append(make([]byte, 0, 1+len(k)), prefix), k...)
}

func indexKey(c cid.Cid) []byte { return cidKey(prefixIndex, c) }

func leafKey(tree cid.Cid, index uint64) []byte {
	k := tree.KeyString()
	b := make([]byte, 1+len(k)+8)
	b[0] = prefixLeaf
	copy(b[1:], k)
	binary.BigEndian.PutUint64(b[1+len(k):], index)
	return b
}

func retentionKey(c cid.Cid) []byte { return cidKey(prefixRetention, c) }

func treeNameKey(tree, manifest cid.Cid) []byte {
	return append(cidKey(prefixTreeName, tree), manifest.KeyString()...)
}

const retentionPinned = 1 << 0

func encodeRetention(r store.Retention) []byte {
	b := make([]byte, 1, 1+binary.MaxVarintLen64)
	if r.Pinned {
		b[0] |= retentionPinned
	}
	var ms uint64
	if !r.LastAccess.IsZero() && r.LastAccess.UnixMilli() > 0 {
		ms = uint64(r.LastAccess.UnixMilli())
	}
	b = binary.AppendUvarint(b, ms)
	if r.Tree.Defined() {
		b = append(b, r.Tree.KeyString()...)
	}
	return b
}

// decodeRetention reads a record: flags, last access and, in records
// written since trees were recorded, the tree CID's bytes to the end.
func decodeRetention(v []byte) (store.Retention, error) {
	if len(v) < 2 || v[0]&^retentionPinned != 0 {
		return store.Retention{}, errBadRecord
	}
	ms, n := binary.Uvarint(v[1:])
	if n <= 0 || ms > math.MaxInt64 {
		return store.Retention{}, errBadRecord
	}
	r := store.Retention{Pinned: v[0]&retentionPinned != 0}
	if rest := v[1+n:]; len(rest) > 0 {
		t, err := cid.Cast(rest)
		if err != nil {
			return store.Retention{}, errBadRecord
		}
		r.Tree = t
	}
	if ms > 0 {
		r.LastAccess = time.UnixMilli(int64(ms)).UTC()
	}
	return r, nil
}

func packKey(n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixPack}, n)
}

// codecPrefix is the key prefix of every index entry of a codec: CIDv1 bytes
// start with the version (1) and then the codec, both uvarints.
func codecPrefix(codec uint64) []byte {
	b := []byte{prefixIndex, 1}
	return binary.AppendUvarint(b, codec)
}

// blockIndex is a block's index entry.
type blockIndex struct {
	refs uint64 // leaves naming this block
	size uint64 // len of its data as stored
	pack uint32 // the pack holding its record
	off  uint64 // where its data starts in that pack, after the header
	// zeros is how many zero bytes end the block past its stored data:
	// padding is kept as a count, not as bytes (see packs.go).
	zeros uint64
}

// length is the block's length: what a read returns and its CID hashes.
func (x blockIndex) length() uint64 { return x.size + x.zeros }

// recordLen is the length of the record of block c in its pack.
func (x blockIndex) recordLen(c cid.Cid) uint64 { return headerLen(c, x.size, x.zeros) + x.size }

// encode writes refs, size, pack and off, and zeros only when there are
// any, so that the entries of blocks kept whole read as they always did.
func (x blockIndex) encode() []byte {
	b := make([]byte, 0, 5*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, x.refs)
	b = binary.AppendUvarint(b, x.size)
	b = binary.AppendUvarint(b, uint64(x.pack))
	b = binary.AppendUvarint(b, x.off)
	if x.zeros > 0 {
		b = binary.AppendUvarint(b, x.zeros)
	}
	return b
}

func decodeIndex(b []byte) (blockIndex, error) {
	var v [5]uint64
	err := uvarints(b, v[:4])
	if errors.Is(err, errTrailing) {
		err = uvarints(b, v[:])
	}
	if err != nil {
		return blockIndex{}, err
	}
	if v[2] > maxPackNumber {
		return blockIndex{}, errBadRecord
	}
	return blockIndex{refs: v[0], size: v[1], pack: uint32(v[2]), off: v[3], zeros: v[4]}, nil
}

// uvarints decodes len(v) uvarints that must make up all of b; with bytes
// left over it fails with errTrailing, an errBadRecord.
func uvarints(b []byte, v []uint64) error {
	for i := range v {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return errBadRecord
		}
		v[i], b = x, b[n:]
	}
	if len(b) != 0 {
		return errTrailing
	}
	return nil
}

// errTrailing: an index value has more fields than asked for.
var errTrailing = fmt.Errorf("%w: trailing bytes", errBadRecord)

type usage struct{ blocks, bytes uint64 }

func (u usage) encode() []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, u.blocks)
	return binary.AppendUvarint(b, u.bytes)
}

func decodeUsage(b []byte) (usage, error) {
	var v [2]uint64
	err := uvarints(b, v[:])
	return usage{blocks: v[0], bytes: v[1]}, err
}

// packMeta is the index's account of one pack, changed in the same batch as
// the index entries it counts.
type packMeta struct {
	// live and liveBytes count the records that index entries point at:
	// blocks, and bytes including record headers. The pack is retired
	// (its record deleted, then its file) only once live is 0.
	live, liveBytes uint64
	// end is the end of the furthest record ever committed into the pack.
	// Bytes after it were appended by Puts that never committed; Open
	// truncates them away. Bytes before it that are not live are dead:
	// deleted blocks, copies moved by compaction, and failed Puts.
	end uint64
}

func (m packMeta) dead() uint64 { return m.end - m.liveBytes }

func (m packMeta) encode() []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, m.live)
	b = binary.AppendUvarint(b, m.liveBytes)
	return binary.AppendUvarint(b, m.end)
}

func decodePackMeta(b []byte) (packMeta, error) {
	var v [3]uint64
	if err := uvarints(b, v[:]); err != nil {
		return packMeta{}, err
	}
	m := packMeta{live: v[0], liveBytes: v[1], end: v[2]}
	if m.liveBytes > m.end {
		return packMeta{}, errBadRecord
	}
	return m, nil
}

func encodeLeaf(block cid.Cid, proof []byte) []byte {
	k := block.KeyString()
	b := make([]byte, 0, binary.MaxVarintLen64+len(k)+len(proof))
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	return append(b, proof...)
}

// decodeLeaf returns the block CID and the proof, which is a slice of v:
// callers that keep it pass a value of their own (db.Get's), and those
// reading an iterator's reused buffer use the CID alone.
func decodeLeaf(v []byte) (cid.Cid, []byte, error) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return cid.Undef, nil, errBadRecord
	}
	c, err := cid.Cast(v[w : w+int(n)])
	if err != nil {
		return cid.Undef, nil, errBadRecord
	}
	return c, v[w+int(n):], nil
}
