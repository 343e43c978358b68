// Package manifest reads and writes Codex's dataset manifest, the small
// protobuf block whose CID users see and which names the dataset's tree.
//
// The encoding follows nim-codex's codex/manifest/coders.nim so that a
// manifest round-trips byte for byte between Codex and meshfs: the header
// fields 1-6 are always written (nim-libp2p's minprotobuf writes zero values
// too), the erasure info (7) only for a protected dataset, filename (8) and
// mimetype (9) only when set; an empty string reads back as "not set".
package manifest

import (
	"context"
	"errors"
	"fmt"
	"math/bits"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/merkle"
)

// Strategy is Codex's StrategyType: how blocks are grouped into codewords.
type Strategy uint32

const (
	Linear  Strategy = 0 // codeword c is blocks c·K … c·K+K−1
	Stepped Strategy = 1 // codeword c is blocks c, c+steps, … (what Codex and meshfs write)
)

func (s Strategy) String() string {
	switch s {
	case Linear:
		return "linear"
	case Stepped:
		return "stepped"
	}
	return fmt.Sprintf("strategy(%d)", uint32(s))
}

// Values Codex writes for every dataset and the only ones meshfs reads.
const (
	// SHA256 is the multihash code of sha2-256 (hcodec).
	SHA256 uint64 = 0x12
	// VersionCIDv1 is Codex's CidVersion enum position for CIDv1
	// (CIDvIncorrect, CIDv0, CIDv1, …), not the CID version number.
	VersionCIDv1 uint64 = 2
)

// Bounds enforced on what is encoded or decoded.
const (
	// MaxBlockSize is the largest block size accepted: the largest block
	// one exchange message (16 MiB at most) carries with its proof, with
	// room to spare. Codex's default is 64 KiB and Logos Storage takes up
	// to 512 KiB; a dataset of larger blocks could be stored, but no peer
	// could ever send it.
	MaxBlockSize = 8 << 20
	// MaxCodewordBytes bounds what decoding one codeword holds: K+M blocks.
	MaxCodewordBytes = 256 << 20
	// MaxShards bounds K and M. Codex's Leopard codec allows up to 65536
	// shards in all; larger values cannot come from a real encoder.
	MaxShards = 1 << 16
)

// Manifest describes a dataset. For a protected (erasure-coded) dataset
// TreeCID and DatasetSize describe the encoded dataset (data, padding and
// parity blocks) and OriginalTreeCID / OriginalDatasetSize the file as
// uploaded; EcK, EcM, OriginalTreeCID, OriginalDatasetSize and Strategy are
// ignored when Protected is false.
type Manifest struct {
	TreeCID     cid.Cid
	BlockSize   uint64
	DatasetSize uint64
	Codec       uint64 // codec of the data blocks, store.CodecBlock
	HCodec      uint64 // multihash of the blocks and tree, SHA256
	Version     uint64 // Codex CidVersion enum, VersionCIDv1
	Filename    string
	Mimetype    string

	Protected           bool
	EcK, EcM            int
	OriginalTreeCID     cid.Cid
	OriginalDatasetSize uint64
	Strategy            Strategy

	// verification holds the encoded VerificationInfo (erasure info field
	// 6) of a Codex storage-request manifest. meshfs does not use it but
	// keeps it so that such a manifest re-encodes to the same bytes.
	verification []byte
}

// New returns an unprotected manifest with the codecs Codex writes.
func New(tree cid.Cid, blockSize, datasetSize uint64) *Manifest {
	return &Manifest{
		TreeCID:     tree,
		BlockSize:   blockSize,
		DatasetSize: datasetSize,
		Codec:       store.CodecBlock,
		HCodec:      SHA256,
		Version:     VersionCIDv1,
	}
}

func ceilDiv(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}

// Blocks is the number of blocks in the tree TreeCID names: data, padding
// and parity blocks when protected (Codex's blocksCount).
func (m *Manifest) Blocks() uint64 { return ceilDiv(m.DatasetSize, m.BlockSize) }

// Size is the size of the file as uploaded, the one users see.
func (m *Manifest) Size() uint64 {
	if m.Protected {
		return m.OriginalDatasetSize
	}
	return m.DatasetSize
}

// DataBlocks is the number of blocks of the file as uploaded (Codex's
// originalBlocksCount when protected); block i < DataBlocks() of the file is
// block i of the tree in both cases.
func (m *Manifest) DataBlocks() uint64 { return ceilDiv(m.Size(), m.BlockSize) }

// Validate checks what Encode and Decode require of a manifest.
func (m *Manifest) Validate() error {
	if err := checkTree("tree CID", m.TreeCID); err != nil {
		return err
	}
	if m.BlockSize == 0 || m.BlockSize > MaxBlockSize {
		return fmt.Errorf("manifest: block size %d out of range [1, %d]", m.BlockSize, MaxBlockSize)
	}
	if m.Blocks() > merkle.MaxLeaves {
		return fmt.Errorf("manifest: %d blocks, more than a tree holds (%d)", m.Blocks(), uint64(merkle.MaxLeaves))
	}
	// meshfs can neither name nor check blocks of other codecs or hashes, and
	// Codex writes nothing else, so anything else is refused outright.
	if m.Codec != store.CodecBlock {
		return fmt.Errorf("manifest: block codec %s, want codex-block", store.CodecName(m.Codec))
	}
	if m.HCodec != SHA256 {
		return fmt.Errorf("manifest: hash codec 0x%x, want sha2-256 (0x12)", m.HCodec)
	}
	if m.Version != VersionCIDv1 {
		return fmt.Errorf("manifest: CID version enum %d, want %d (CIDv1)", m.Version, VersionCIDv1)
	}
	if !m.Protected {
		return nil
	}
	if m.EcK < 1 || m.EcK >= MaxShards || m.EcM < 1 || m.EcM >= MaxShards {
		return fmt.Errorf("manifest: erasure code K=%d M=%d out of range [1, %d)", m.EcK, m.EcM, MaxShards)
	}
	if codeword := uint64(m.EcK+m.EcM) * m.BlockSize; codeword > MaxCodewordBytes {
		return fmt.Errorf("manifest: a codeword of K+M=%d blocks of %d bytes is %d bytes; decoding holds at most %d",
			m.EcK+m.EcM, m.BlockSize, codeword, uint64(MaxCodewordBytes))
	}
	if err := checkTree("original tree CID", m.OriginalTreeCID); err != nil {
		return err
	}
	if m.Strategy != Linear && m.Strategy != Stepped {
		return fmt.Errorf("manifest: unknown strategy %d", uint32(m.Strategy))
	}
	if m.OriginalDatasetSize == 0 {
		return errors.New("manifest: protected dataset with original size 0")
	}
	// Codex's Manifest.verify: the encoded dataset holds exactly
	// steps × (K+M) blocks, steps = roundUp(original blocks, K) / K.
	k, mm := uint64(m.EcK), uint64(m.EcM)
	steps := ceilDiv(m.DataBlocks(), k)
	hi, total := bits.Mul64(steps, k+mm)
	if hi != 0 || total != m.Blocks() {
		return fmt.Errorf("manifest: %d blocks, but K=%d M=%d over %d original blocks needs %d×%d",
			m.Blocks(), m.EcK, m.EcM, m.DataBlocks(), steps, k+mm)
	}
	return nil
}

func checkTree(what string, c cid.Cid) error {
	if !c.Defined() {
		return fmt.Errorf("manifest: %s missing", what)
	}
	if c.Version() != 1 || c.Type() != store.CodecRoot {
		return fmt.Errorf("manifest: %s %s is not a CIDv1 codex-root", what, c)
	}
	if _, err := store.Digest(c); err != nil {
		return fmt.Errorf("manifest: %s: %w", what, err)
	}
	return nil
}

// Block wraps the encoded manifest as a codex-manifest block; its CID is the
// manifest CID.
func (m *Manifest) Block() (store.Block, error) {
	b, err := m.Encode()
	if err != nil {
		return store.Block{}, err
	}
	return store.NewBlock(store.CodecManifest, b), nil
}

// FromBlock decodes a manifest block after checking its codec and that its
// bytes hash to its CID.
func FromBlock(b store.Block) (*Manifest, error) {
	if b.CID.Type() != store.CodecManifest {
		return nil, fmt.Errorf("manifest: block %s has codec %s, not codex-manifest", b.CID, store.CodecName(b.CID.Type()))
	}
	if err := store.Verify(b); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Decode(b.Data)
}

// Getter is what Read needs of a store.
type Getter interface {
	Get(ctx context.Context, c cid.Cid) (store.Block, error)
}

// Read gets manifest block c from st and decodes it. A CID that is not a
// manifest's is not found, whatever st holds under it: the opener of a
// dataset asked for something that is not one.
func Read(ctx context.Context, st Getter, c cid.Cid) (store.Block, *Manifest, error) {
	if c.Type() != store.CodecManifest {
		return store.Block{}, nil, fmt.Errorf("open %s: not a manifest CID (codec %s): %w", store.CIDText(c), store.CodecName(c.Type()), store.ErrNotFound)
	}
	b, err := st.Get(ctx, c)
	if err != nil {
		return store.Block{}, nil, fmt.Errorf("open %s: manifest: %w", store.CIDText(c), err)
	}
	m, err := FromBlock(b)
	if err != nil {
		return store.Block{}, nil, fmt.Errorf("open %s: %w", store.CIDText(c), err)
	}
	return b, m, nil
}
