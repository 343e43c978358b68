package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"

	"github.com/meshfs/meshfs/store"
)

// GetLeaf implements store.BlockStore. Should a concurrent DeleteLeaf free
// the block between the leaf's lookup and the block's read, the result is
// ErrNotFound, as if the DeleteLeaf had come first.
func (s *Store) GetLeaf(ctx context.Context, tree cid.Cid, index uint64) (store.Leaf, store.Block, error) {
	fail := func(err error) (store.Leaf, store.Block, error) {
		return store.Leaf{}, store.Block{}, fmt.Errorf("repo: get leaf %s[%d]: %w", store.CIDText(tree), index, err)
	}
	return s.getLeaf(ctx, tree, index, nil, fail)
}

// LoadLeaf implements store.LeafLoader.
func (s *Store) LoadLeaf(ctx context.Context, tree cid.Cid, index uint64, buf []byte) (store.Leaf, store.Block, error) {
	fail := func(err error) (store.Leaf, store.Block, error) {
		return store.Leaf{}, store.Block{}, fmt.Errorf("repo: load leaf %s[%d]: %w", store.CIDText(tree), index, err)
	}
	return s.getLeaf(ctx, tree, index, buf, fail)
}

// getLeaf is GetLeaf reading the block into buf if it has the capacity.
func (s *Store) getLeaf(ctx context.Context, tree cid.Cid, index uint64, buf []byte, fail func(error) (store.Leaf, store.Block, error)) (store.Leaf, store.Block, error) {
	bc, proof, x, err := s.findLeaf(ctx, tree, index)
	if err != nil {
		return fail(err)
	}
	data, err := s.readInto(bc, x, buf)
	if err != nil {
		return fail(fmt.Errorf("block %s: %w", store.CIDText(bc), err))
	}
	leaf := store.Leaf{Tree: tree, Index: index, Block: bc, Proof: proof}
	return leaf, store.Block{CID: bc, Data: data}, nil
}

// ReadLeaf copies the bytes of the block at position index of tree, from
// byte off of the block on, into p, and returns how many it copied: len(p),
// or fewer where the block ends. It is GetLeaf for readers of held data
// that need neither the proof nor a buffer of the block's own: the bytes go
// from the pack straight into p. A position not held fails with
// store.ErrNotFound.
func (s *Store) ReadLeaf(ctx context.Context, tree cid.Cid, index uint64, p []byte, off int64) (int, error) {
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("repo: read leaf %s[%d] at %d: %w", store.CIDText(tree), index, off, err)
	}
	bc, _, x, err := s.findLeaf(ctx, tree, index)
	if err != nil {
		return fail(err)
	}
	if off < 0 || uint64(off) > x.length() {
		return fail(fmt.Errorf("offset outside a block of %d bytes", x.length()))
	}
	if s.verify {
		// Only the whole block can be checked against its CID.
		data, err := s.read(bc, x)
		if err != nil {
			return fail(fmt.Errorf("block %s: %w", store.CIDText(bc), err))
		}
		return copy(p, data[off:]), nil
	}
	n, err := s.readAt(bc, x, p, uint64(off))
	if err != nil {
		return fail(fmt.Errorf("block %s: %w", store.CIDText(bc), err))
	}
	return n, nil
}

// findLeaf looks up the block at position index of tree: its CID, the
// leaf's proof and the block's index entry.
func (s *Store) findLeaf(ctx context.Context, tree cid.Cid, index uint64) (cid.Cid, []byte, blockIndex, error) {
	if err := s.enter(ctx); err != nil {
		return cid.Undef, nil, blockIndex{}, err
	}
	v, err := s.db.Get(leafKey(tree, index), nil)
	if err != nil {
		return cid.Undef, nil, blockIndex{}, dbErr(err)
	}
	bc, proof, err := decodeLeaf(v)
	if err != nil {
		return cid.Undef, nil, blockIndex{}, err
	}
	x, err := s.index(bc)
	if err != nil {
		return cid.Undef, nil, blockIndex{}, fmt.Errorf("block %s: %w", store.CIDText(bc), err)
	}
	return bc, proof, x, nil
}

// HasLeaf implements store.BlockStore.
func (s *Store) HasLeaf(ctx context.Context, tree cid.Cid, index uint64) (bool, error) {
	if err := s.enter(ctx); err != nil {
		return false, fmt.Errorf("repo: has leaf %s[%d]: %w", store.CIDText(tree), index, err)
	}
	ok, err := s.db.Has(leafKey(tree, index), nil)
	if err != nil {
		return false, fmt.Errorf("repo: has leaf %s[%d]: %w", store.CIDText(tree), index, dbErr(err))
	}
	return ok, nil
}

// PutLeaf implements store.BlockStore. Recording a different leaf at a
// position already held replaces it: the old block loses its reference
// (and is deleted if that was its last) and the new one gains one.
func (s *Store) PutLeaf(ctx context.Context, leaf store.Leaf) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: put leaf %s[%d]: %w", store.CIDText(leaf.Tree), leaf.Index, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.putLeafLocked(leaf); err != nil {
		return fmt.Errorf("repo: put leaf %s[%d]: %w", store.CIDText(leaf.Tree), leaf.Index, err)
	}
	return nil
}

// putLeafLocked records leaf, whose block must be held. Callers hold mu.
// It uses the store's own change, as commitPut does: PutLeafBlock tries it
// first for every block, and finds most not held.
func (s *Store) putLeafLocked(leaf store.Leaf) error {
	ch := s.begin(&s.change, &s.batch)
	if err := s.addLeaf(ch, leaf); err != nil {
		return err
	}
	if err := s.checkChange(ch); err != nil {
		return err
	}
	return s.commit(ch)
}

// addLeaf adds to ch the recording of leaf, whose block must be held as
// ch has it, counting the reference the leaf adds. Callers hold mu and
// check the quota before they commit (checkChange).
func (s *Store) addLeaf(ch *change, leaf store.Leaf) error {
	x, err := ch.index(s, leaf.Block)
	if err != nil {
		return fmt.Errorf("block %s: %w", store.CIDText(leaf.Block), err)
	}
	ref, err := s.setLeaf(ch, leaf)
	if err != nil || ref != newRef {
		return err
	}
	// The entry read above: setLeaf's release of the position's old block
	// cannot have touched it, as that is another block.
	x.refs++
	ch.setIndex(leaf.Block, x)
	return nil
}

// leafChange is what recording a leaf does to its block's references.
type leafChange int

const (
	sameLeaf leafChange = iota // the position holds this very leaf: nothing to do
	newProof                   // the position names the block already: the proof changes
	newRef                     // the leaf is a new reference to its block
)

// setLeaf adds leaf to ch in place of whatever its position holds; a block
// named there before loses that reference in ch, and the usage counts the
// new proof in place of the old. Callers hold mu, count the reference
// setLeaf reports in the block's entry, and check the quota before they
// commit (checkChange).
func (s *Store) setLeaf(ch *change, leaf store.Leaf) (leafChange, error) {
	lk := leafKey(leaf.Tree, leaf.Index)
	oldBlock, oldProof, found, err := ch.leaf(s, lk)
	switch {
	case err != nil:
		return 0, err
	case found:
		if oldBlock.Equals(leaf.Block) {
			if bytes.Equal(oldProof, leaf.Proof) {
				return sameLeaf, nil
			}
			ch.put(lk, encodeLeaf(leaf.Block, leaf.Proof))
			ch.usage.bytes = ch.usage.bytes - uint64(len(oldProof)) + uint64(len(leaf.Proof))
			return newProof, nil
		}
		if err := s.release(ch, oldBlock); err != nil {
			return 0, err
		}
		ch.usage.bytes -= uint64(len(oldProof))
	}
	ch.put(lk, encodeLeaf(leaf.Block, leaf.Proof))
	ch.usage.bytes += uint64(len(leaf.Proof))
	return newRef, nil
}

// DeleteLeaf implements store.BlockStore. Deleting a leaf that is not held
// is not an error.
func (s *Store) DeleteLeaf(ctx context.Context, tree cid.Cid, index uint64) error {
	fail := func(err error) error {
		return fmt.Errorf("repo: delete leaf %s[%d]: %w", store.CIDText(tree), index, err)
	}
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.begin(new(change), new(leveldb.Batch))
	found, err := s.dropLeaf(ch, tree, index)
	if err != nil {
		return fail(err)
	}
	if !found {
		return nil
	}
	if err := s.commit(ch); err != nil {
		return fail(err)
	}
	return nil
}

// dropLeaf adds to ch the removal of the leaf at index of tree, if ch has
// one there, and of the reference it holds, and reports whether it found
// one. Callers hold mu.
func (s *Store) dropLeaf(ch *change, tree cid.Cid, index uint64) (bool, error) {
	lk := leafKey(tree, index)
	bc, proof, found, err := ch.leaf(s, lk)
	if err != nil || !found {
		return false, err
	}
	ch.del(lk)
	ch.usage.bytes -= uint64(len(proof))
	return true, s.release(ch, bc)
}

// release adds to ch the dropping of one reference to block c, and of the
// block itself when that was the last. Callers hold mu.
func (s *Store) release(ch *change, c cid.Cid) error {
	x, err := ch.index(s, c)
	if errors.Is(err, store.ErrNotFound) {
		// Only a damaged database gets here; the leaf goes anyway.
		s.log.Warn("repo: leaf names a block that is not held", "block", c)
		return nil
	}
	if err != nil {
		return fmt.Errorf("block %s: %w", store.CIDText(c), err)
	}
	if x.refs <= 1 {
		ch.dropBlock(s, c, x)
		return nil
	}
	x.refs--
	ch.setIndex(c, x)
	return nil
}
