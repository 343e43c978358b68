package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// deleteTreeBatch is how many leaves one commit of DeleteTree removes: a
// batch of a few hundred kilobytes, so that a tree of a million leaves
// does not hold mu, which every write waits on, for seconds at a time.
const deleteTreeBatch = 1024

// DeleteTree implements store.BlockStore.
func (s *Store) DeleteTree(ctx context.Context, tree cid.Cid) (int, error) {
	prefix := cidKey(prefixLeaf, tree)
	total := 0
	for {
		n, err := s.deleteLeaves(ctx, prefix)
		total += n
		if err != nil {
			return total, fmt.Errorf("repo: delete tree %s: %w", store.CIDText(tree), err)
		}
		if n < deleteTreeBatch {
			return total, nil
		}
	}
}

// deleteLeaves removes up to deleteTreeBatch leaves under prefix in one
// commit, with the references they held.
func (s *Store) deleteLeaves(ctx context.Context, prefix []byte) (int, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		keys   [][]byte
		blocks []cid.Cid
		drops  = map[cid.Cid]uint64{}
		// proofBytes are those of the leaves deleted, counted as used.
		proofBytes uint64
	)
	it := s.db.NewIterator(util.BytesPrefix(prefix), &opt.ReadOptions{DontFillCache: true})
	for len(keys) < deleteTreeBatch && it.Next() {
		bc, proof, err := decodeLeaf(it.Value())
		if err != nil {
			it.Release()
			return 0, fmt.Errorf("leaf %x: %w", it.Key(), err)
		}
		keys = append(keys, bytes.Clone(it.Key()))
		proofBytes += uint64(len(proof))
		if drops[bc] == 0 {
			blocks = append(blocks, bc)
		}
		drops[bc]++
	}
	it.Release()
	if err := it.Error(); err != nil {
		return 0, dbErr(err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	ch := s.begin(new(change), new(leveldb.Batch))
	for _, k := range keys {
		ch.del(k)
	}
	ch.usage.bytes -= proofBytes
	// Counted per block, not per leaf: the leaves of one tree may name one
	// block many times (a file of zeros), whose entry is then read and
	// written once.
	for _, c := range blocks {
		x, err := ch.index(s, c)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				s.log.Warn("repo: leaf names a block that is not held", "block", c)
				continue
			}
			return 0, fmt.Errorf("block %s: %w", store.CIDText(c), err)
		}
		if d := drops[c]; x.refs > d {
			x.refs -= d
			ch.setIndex(c, x)
		} else {
			ch.dropBlock(s, c, x)
		}
	}
	if err := s.commit(ch); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// ForEachTree implements store.BlockStore. It seeks from tree to tree
// rather than reading every leaf, and calls fn after the scan, so fn may
// change the store.
func (s *Store) ForEachTree(ctx context.Context, fn func(cid.Cid) error) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: list trees: %w", err)
	}
	var trees []cid.Cid
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixLeaf}), &opt.ReadOptions{DontFillCache: true})
	for ok := it.First(); ok; {
		if err := ctx.Err(); err != nil {
			it.Release()
			return fmt.Errorf("repo: list trees: %w", err)
		}
		k := it.Key()
		if len(k) < 1+8 {
			it.Release()
			return fmt.Errorf("repo: list trees: leaf key %x: %w", k, errBadRecord)
		}
		t, err := cid.Cast(k[1 : len(k)-8])
		if err != nil {
			it.Release()
			return fmt.Errorf("repo: list trees: leaf key %x: %w", k, errBadRecord)
		}
		trees = append(trees, t)
		last := leafKey(t, math.MaxUint64)
		if ok = it.Seek(last); ok && bytes.Equal(it.Key(), last) {
			ok = it.Next()
		}
	}
	it.Release()
	if err := it.Error(); err != nil {
		return fmt.Errorf("repo: list trees: %w", dbErr(err))
	}
	for _, t := range trees {
		if err := fn(t); err != nil {
			return fmt.Errorf("repo: list trees: %w", err)
		}
	}
	return nil
}
