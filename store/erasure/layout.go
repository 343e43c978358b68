// Package erasure implements Codex's stepped Reed-Solomon layout and the
// per-codeword coding meshfs does with klauspost/reedsolomon.
//
// A protected dataset of n original blocks is laid out as in nim-codex
// (codex/erasure/erasure.nim, codex/indexingstrategy.nim):
//
//	rounded = roundUp(n, K)          data blocks including padding
//	steps   = rounded / K            codewords (columns)
//	total   = rounded + steps × M    blocks in the protected tree
//
// Codeword c holds the data blocks c, c+steps, …, c+(K−1)·steps and the
// parity blocks rounded+c+j·steps: block i sits in column i mod steps, at
// row i / steps. Data keeps its original order at 0…n−1, and a run of
// consecutive lost blocks costs each codeword at most one block per steps.
//
// Parity bytes differ from Codex's (it uses Leopard); only the layout and
// the tree built over it are shared.
package erasure

import (
	"crypto/sha256"
	"fmt"

	"github.com/meshfs/meshfs/store"
)

// MaxShards is the largest K+M: the GF(2^8) codes of klauspost/reedsolomon
// (larger ones would switch to its Leopard GF(2^16) mode, untested here).
const MaxShards = 256

// MaxBlocks bounds n so that every layout index fits comfortably in a
// uint64 (and a Merkle tree of them in memory is at least imaginable).
const MaxBlocks = 1 << 48

// PaddingDigest is the tree leaf of a padding block (N ≤ i < Rounded):
// Codex names padding by the CID of the empty block, so its leaf is
// sha256 of the empty string, although as Reed-Solomon input a padding block
// is blockSize zero bytes. Padding is never stored or sent, only synthesised.
var PaddingDigest = sha256.Sum256(nil)

// PaddingCID is the codex-block CID Codex records for padding blocks.
var PaddingCID = store.CIDFromDigest(store.CodecBlock, PaddingDigest)

// Layout is the stepped layout of a protected dataset: K data and M parity
// blocks per codeword over N original data blocks.
type Layout struct {
	K, M int
	N    uint64
}

// NewLayout validates the parameters. K may exceed N (every codeword then
// has padding); Codex itself refuses to encode with K > N blocks.
func NewLayout(k, m int, n uint64) (Layout, error) {
	if k < 1 || m < 1 || k+m > MaxShards {
		return Layout{}, fmt.Errorf("erasure: K=%d M=%d: need K ≥ 1, M ≥ 1, K+M ≤ %d", k, m, MaxShards)
	}
	if n < 1 || n > MaxBlocks {
		return Layout{}, fmt.Errorf("erasure: %d data blocks, need 1 to %d", n, uint64(MaxBlocks))
	}
	return Layout{K: k, M: m, N: n}, nil
}

// Rounded is the number of data blocks including padding: N rounded up to
// a multiple of K.
func (l Layout) Rounded() uint64 { return l.Steps() * uint64(l.K) }

// Steps is the number of codewords.
func (l Layout) Steps() uint64 { return (l.N + uint64(l.K) - 1) / uint64(l.K) }

// Total is the number of blocks in the protected tree.
func (l Layout) Total() uint64 { return l.Steps() * uint64(l.K+l.M) }

// Column is the codeword that block i (< Total) belongs to.
func (l Layout) Column(i uint64) uint64 { return i % l.Steps() }

// Row is the position of block i (< Total) within its codeword: its shard
// index, 0…K−1 for data and K…K+M−1 for parity.
func (l Layout) Row(i uint64) int { return int(i / l.Steps()) }

// Indices are the K+M block indices of codeword col (< Steps), in shard
// order: data rows col, col+steps, …, then parity rounded+col+j·steps.
func (l Layout) Indices(col uint64) []uint64 {
	steps := l.Steps()
	idx := make([]uint64, l.K+l.M)
	for r := range idx {
		// rounded = K·steps, so parity j lands at (K+j)·steps + col.
		idx[r] = uint64(r)*steps + col
	}
	return idx
}

// IsPadding reports whether block i is padding (N ≤ i < Rounded).
func (l Layout) IsPadding(i uint64) bool { return i >= l.N && i < l.Rounded() }

// IsParity reports whether block i is a parity block (Rounded ≤ i < Total).
func (l Layout) IsParity(i uint64) bool { return i >= l.Rounded() && i < l.Total() }
