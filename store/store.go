// Package store defines how meshfs keeps blocks: the block and CID model shared
// by every layer, and the BlockStore interface that the LevelDB repository,
// the in-memory store and (later) the network store all implement.
//
// A dataset is stored as plain blocks keyed by CID plus one leaf entry per
// (tree CID, index) that names the block at that position and keeps its Merkle
// inclusion proof, so that the block can be served to peers with its proof
// and found again by position without loading the manifest's tree.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Errors every implementation returns (wrapped with context) so that callers
// can tell them apart with errors.Is.
var (
	// ErrNotFound: the block or leaf is not held by this store.
	ErrNotFound = errors.New("block not found")
	// ErrQuotaExceeded: storing the block would take the store over its quota.
	// Nothing of the failed call is written.
	ErrQuotaExceeded = errors.New("storage quota exceeded")
	// ErrInvalidBlock: the bytes do not hash to the CID they are stored under.
	ErrInvalidBlock = errors.New("block does not match its CID")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store closed")
)

// Block is an immutable piece of content and the CID its bytes hash to.
// Callers must not modify Data after handing a Block to a store or receiving
// one from it.
type Block struct {
	CID  cid.Cid
	Data []byte

	// hashed is the Data that NewBlock hashed to make CID. Verify trusts a
	// block whose Data is still that very slice instead of hashing 64 KiB
	// again: on the upload and fetch paths every block is hashed once to
	// name or check it, and a second hash in the store would cost as much
	// again. A Block whose Data was replaced is hashed anew.
	hashed []byte
}

// sameSlice reports whether a and b are the same bytes in memory.
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Leaf is the store's record of one position in a dataset tree: which block
// sits at index Index of tree Tree, and the encoded Merkle proof for it.
type Leaf struct {
	Tree  cid.Cid
	Index uint64
	Block cid.Cid
	Proof []byte
}

// Usage is a snapshot of what a store holds.
type Usage struct {
	Blocks     uint64 // distinct blocks stored
	UsedBytes  uint64 // bytes of block data and of leaves' proofs stored
	QuotaBytes uint64 // 0 means unlimited
}

// BlockStore keeps blocks by CID and leaf entries by (tree CID, index).
//
// Contract, checked by the conformance suite in store/storetest:
//   - Put is idempotent: storing a block that is already held succeeds and
//     changes nothing. It verifies that Data hashes to CID (ErrInvalidBlock).
//   - A Put that would take the bytes of block data held over the quota
//     fails with ErrQuotaExceeded and writes nothing. A leaf's proof counts
//     as bytes used too (its proof is what a peer's delivery may make
//     large), and a PutLeaf or PutLeafBlock that would take the usage over
//     the quota fails the same way; the rest of a leaf entry is metadata.
//   - PutLeaf records a leaf whose block is already held (ErrNotFound
//     otherwise). Each distinct leaf counts as one reference to its block;
//     recording the same leaf again changes nothing but its proof. A leaf
//     recorded at a position already held replaces it, and the old block
//     loses its reference.
//   - PutLeafBlock(leaf, b) is Put(b) then PutLeaf(leaf) as one call, for
//     b the block leaf names (ErrInvalidBlock otherwise, and nothing is
//     written), so that a store can record both in one commit. If it fails
//     after storing b, b is held without the leaf, as after a Put alone.
//   - DeleteLeaf removes a leaf and drops its reference; a block whose last
//     reference goes away is deleted with it. Deleting a leaf not held is
//     not an error.
//   - DeleteTree removes every leaf of a tree, as DeleteLeaf does each, and
//     reports how many it removed. It may commit in several steps, so a
//     call that fails or is cancelled can leave some of them.
//   - ForEachTree lists every tree with at least one leaf held.
//   - Delete removes a block that no leaf references; a referenced block is
//     kept (the call succeeds, the leaves still own it). Deleting what is not
//     held is not an error.
//   - Reads return ErrNotFound for what is not held. Every method honours ctx.
type BlockStore interface {
	Get(ctx context.Context, c cid.Cid) (Block, error)
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Put(ctx context.Context, b Block) error
	Delete(ctx context.Context, c cid.Cid) error

	// GetLeaf returns the leaf entry at (tree, index) and the block it names.
	GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (Leaf, Block, error)
	HasLeaf(ctx context.Context, tree cid.Cid, index uint64) (bool, error)
	PutLeaf(ctx context.Context, leaf Leaf) error
	// PutLeafBlock stores b and records leaf, which names it: how the
	// block exchange and the decoder keep each block of a dataset.
	PutLeafBlock(ctx context.Context, leaf Leaf, b Block) error
	DeleteLeaf(ctx context.Context, tree cid.Cid, index uint64) error
	// DeleteTree and ForEachTree let the node reclaim the leaves of trees
	// no dataset names any more (an interrupted upload, a removed dataset)
	// without knowing how many leaves each has.
	DeleteTree(ctx context.Context, tree cid.Cid) (int, error)
	ForEachTree(ctx context.Context, fn func(tree cid.Cid) error) error

	// ForEach calls fn with the CID of every block of the given codec held,
	// in no particular order, and stops at fn's first error.
	ForEach(ctx context.Context, codec uint64, fn func(cid.Cid) error) error

	Usage(ctx context.Context) (Usage, error)
	Close() error
}

// LeafReader is what a store may offer beside BlockStore: part of a held
// block, found by its position in a tree, copied into the caller's buffer.
// A dataset reader takes it for reads of data held here, which then cost no
// buffer per block, no copy through its cache and no goroutine per block.
// ReadLeaf copies from byte off of the block on, as far as the block or p
// goes, and returns how many bytes it copied; a position not held fails
// with ErrNotFound, an off outside the block with another error.
//
// It is not part of BlockStore, nor forwarded by wrappers such as
// NetworkStore: only a store that holds the bytes can read them in place,
// so a reader is handed one explicitly rather than finding it by a type
// assertion on whatever store it reads through.
type LeafReader interface {
	ReadLeaf(ctx context.Context, tree cid.Cid, index uint64, p []byte, off int64) (int, error)
}

// LeafLoader is what a store may offer beside BlockStore: GetLeaf with the
// block's bytes read into buf, the caller's, when it has the capacity (a
// buffer of the store's own otherwise). A server sending blocks to peers
// loads them so into buffers it takes back once they are sent, where
// GetLeaf would cost it a fresh buffer per block: an allocation the size
// of the block, zeroed, then collected. The block's Data aliases buf, so
// the caller must not reuse buf while it uses the block. Like LeafReader
// it is handed to its user explicitly, not found by a type assertion.
type LeafLoader interface {
	LoadLeaf(ctx context.Context, tree cid.Cid, index uint64, buf []byte) (Leaf, Block, error)
}

// BatchStore is what a store may offer beside BlockStore: many blocks or
// leaves written in one call, and held blocks read into the caller's
// buffers. An upload writes through it: where a call per block costs a
// lock, an append and an index commit each, a batch costs one of each.
//
//   - PutLeafBlocks(leaves, blocks) is PutLeafBlock(leaves[i], blocks[i])
//     for every i, in order, as one change: all of it is held once it
//     returns, none of it if it fails. Unlike Put it keeps no reference
//     to the blocks' bytes, so the caller may reuse them once it returns.
//   - MoveLeaves(from, leaves) records each leaf as PutLeaf does and then
//     deletes the leaf at its index of tree from, if any, as DeleteLeaf
//     does, in order, as one change: a leaf whose block is not held fails
//     it (ErrNotFound) and nothing is written. Where both name one block,
//     its reference passes from one to the other: how an upload's staging
//     leaves become its dataset's.
//   - Either fails with ErrQuotaExceeded, writing nothing, when the whole
//     batch would take the store over its quota.
//
// A batch is one commit: callers keep them to a megabyte or two of blocks
// and a thousand or so leaves, so that other writers do not wait long.
type BatchStore interface {
	BlockStore
	LeafReader
	PutLeafBlocks(ctx context.Context, leaves []Leaf, blocks []Block) error
	MoveLeaves(ctx context.Context, from cid.Cid, leaves []Leaf) error
}

// VerifyLeafBlock checks what PutLeafBlock requires of its arguments
// before anything is hashed: that leaf names b (ErrInvalidBlock).
func VerifyLeafBlock(leaf Leaf, b Block) error {
	if !leaf.Block.Equals(b.CID) {
		return fmt.Errorf("put leaf %s[%d]: block %s is not the leaf's %s: %w",
			CIDText(leaf.Tree), leaf.Index, CIDText(b.CID), CIDText(leaf.Block), ErrInvalidBlock)
	}
	return nil
}

// Verify checks that b.Data hashes to b.CID. A block made by NewBlock is
// known to, as long as its Data is the slice NewBlock hashed.
func Verify(b Block) error {
	if b.hashed != nil && sameSlice(b.hashed, b.Data) {
		return nil
	}
	want, err := b.CID.Prefix().Sum(b.Data)
	if err != nil {
		return fmt.Errorf("hash block %s: %w", b.CID, err)
	}
	if !want.Equals(b.CID) {
		return fmt.Errorf("%w: %s", ErrInvalidBlock, b.CID)
	}
	return nil
}
