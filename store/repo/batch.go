package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

var _ store.BatchStore = (*Store)(nil)

// PutLeafBlocks implements store.BatchStore. It is Put's sequence for the
// whole batch: the records of the blocks not held are appended first, with
// one pwritev per pack, then everything is committed in one index batch,
// under one quota check. A crash between the two leaves records that no
// entry points at, as after a Put's append: none of the batch is held.
// Records are written from the blocks' bytes before it returns, which is
// why the caller may reuse them.
func (s *Store) PutLeafBlocks(ctx context.Context, leaves []store.Leaf, blocks []store.Block) error {
	fail := func(err error) error { return fmt.Errorf("repo: put %d leaf blocks: %w", len(blocks), err) }
	if len(leaves) != len(blocks) {
		return fail(fmt.Errorf("%d leaves for %d blocks", len(leaves), len(blocks)))
	}
	for i, b := range blocks {
		if !b.CID.Defined() || b.CID.ByteLen() > maxCIDBytes {
			return fail(fmt.Errorf("block %d: undefined or oversized CID: %w", i, store.ErrInvalidBlock))
		}
		if err := store.VerifyLeafBlock(leaves[i], b); err != nil {
			return fail(err)
		}
	}
	s.puts.RLock()
	defer s.puts.RUnlock()
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	if len(blocks) == 0 {
		return nil
	}
	for _, b := range blocks {
		if err := store.Verify(b); err != nil {
			return fail(err)
		}
	}
	appended := map[cid.Cid]blockIndex{}
	var packs []*pack // of the records appended, one per record
	// Their pending counts are dropped under mu with the commit, as in put.
	release := func() {
		for _, p := range packs {
			p.pending.Add(-1)
		}
		packs = nil
	}
	defer func() {
		if len(packs) > 0 {
			s.mu.Lock()
			release()
			s.mu.Unlock()
		}
	}()
	// A block held when looked up may be deleted before the commit, which
	// then finds it neither held nor appended: the next round appends it.
	// The rounds end, since what is appended stays so.
	for {
		recs, err := s.notHeld(blocks, appended)
		if err != nil {
			return fail(err)
		}
		if err := s.appendBatch(recs, appended, &packs); err != nil {
			return fail(err)
		}
		s.mu.Lock()
		again, err := s.commitLeafBlocks(leaves, appended)
		if err != nil || !again {
			release()
		}
		s.mu.Unlock()
		if err != nil {
			return fail(err)
		}
		if !again {
			return nil
		}
	}
}

// notHeld returns the records of the blocks neither held nor appended
// already, once each.
func (s *Store) notHeld(blocks []store.Block, appended map[cid.Cid]blockIndex) ([]record, error) {
	var recs []record
	seen := make(map[cid.Cid]bool, len(blocks))
	for _, b := range blocks {
		if _, ok := appended[b.CID]; ok || seen[b.CID] {
			continue
		}
		seen[b.CID] = true
		held, err := s.db.Has(indexKey(b.CID), nil)
		if err != nil {
			return nil, dbErr(err)
		}
		if !held {
			data, zeros := stored(b.Data)
			recs = append(recs, record{c: b.CID, data: data, zeros: zeros})
		}
	}
	return recs, nil
}

// appendBatch appends recs after checking the quota has room for them, so
// that a batch refused early appends nothing, syncs their packs in sync
// mode, and notes where each went in appended and its pack in packs.
func (s *Store) appendBatch(recs []record, appended map[cid.Cid]blockIndex, packs *[]*pack) error {
	if len(recs) == 0 {
		return nil
	}
	var size uint64
	for _, r := range recs {
		size += uint64(len(r.data))
	}
	s.mu.Lock()
	err := s.checkQuota(size)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	at := make([]placed, len(recs))
	if err := s.appendRecords(recs, at); err != nil {
		return err
	}
	var synced []*pack
	for i, r := range recs {
		p := at[i].p
		*packs = append(*packs, p)
		appended[r.c] = blockIndex{size: uint64(len(r.data)), zeros: r.zeros, pack: p.n, off: at[i].off}
		if s.sync && !slices.Contains(synced, p) {
			synced = append(synced, p)
		}
	}
	for _, p := range synced {
		if err := p.f.Sync(); err != nil {
			return fmt.Errorf("sync pack: %w", err)
		}
	}
	if crashHook != nil {
		crashHook(hookBatchAppended)
	}
	return nil
}

// commitLeafBlocks commits the leaves, making held first each block that
// is not, from its record in appended. It reports, committing nothing, a
// block that is in neither. Callers hold mu.
func (s *Store) commitLeafBlocks(leaves []store.Leaf, appended map[cid.Cid]blockIndex) (again bool, err error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	ch := s.begin(new(change), new(leveldb.Batch))
	if err := s.readLeaves(ch, leaves); err != nil {
		return false, err
	}
	for _, l := range leaves {
		_, err := ch.index(s, l.Block)
		switch {
		case errors.Is(err, store.ErrNotFound):
			x, ok := appended[l.Block]
			if !ok {
				return true, nil
			}
			ch.addBlock(s, l.Block, x)
		case err != nil:
			return false, err
		}
		if err := s.addLeaf(ch, l); err != nil {
			return false, fmt.Errorf("leaf %s[%d]: %w", store.CIDText(l.Tree), l.Index, err)
		}
	}
	if err := s.checkChange(ch); err != nil {
		return false, err
	}
	return false, s.commit(ch)
}

// MoveLeaves implements store.BatchStore. A leaf whose block the leaf of
// from names too costs the two leaves' entries alone: the reference passes
// from one to the other, and the block's entry is neither read nor
// written.
func (s *Store) MoveLeaves(ctx context.Context, from cid.Cid, leaves []store.Leaf) error {
	fail := func(err error) error {
		return fmt.Errorf("repo: move %d leaves from %s: %w", len(leaves), store.CIDText(from), err)
	}
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	if len(leaves) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.begin(new(change), new(leveldb.Batch))
	froms := make([]store.Leaf, len(leaves))
	for i, l := range leaves {
		froms[i] = store.Leaf{Tree: from, Index: l.Index}
	}
	if err := s.readLeaves(ch, leaves); err != nil {
		return fail(err)
	}
	if err := s.readLeaves(ch, froms); err != nil {
		return fail(err)
	}
	for _, l := range leaves {
		passed, err := s.passLeaf(ch, from, l)
		if err == nil && !passed {
			if err = s.addLeaf(ch, l); err == nil {
				_, err = s.dropLeaf(ch, from, l.Index)
			}
		}
		if err != nil {
			return fail(fmt.Errorf("leaf %s[%d]: %w", store.CIDText(l.Tree), l.Index, err))
		}
	}
	if err := s.checkChange(ch); err != nil {
		return fail(err)
	}
	if err := s.commit(ch); err != nil {
		return fail(err)
	}
	return nil
}

// passLeaf records l in place of from's leaf at its index, when that names
// l's block and l's own position is free, and reports whether it did. The
// block is held, as every block a leaf names; its references stay as
// they are. Callers hold mu.
func (s *Store) passLeaf(ch *change, from cid.Cid, l store.Leaf) (bool, error) {
	fk, lk := leafKey(from, l.Index), leafKey(l.Tree, l.Index)
	if bytes.Equal(fk, lk) {
		return false, nil
	}
	bc, proof, found, err := ch.leaf(s, fk)
	if err != nil || !found || !bc.Equals(l.Block) {
		return false, err
	}
	if _, err := ch.get(s, lk); !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	ch.del(fk)
	ch.put(lk, encodeLeaf(l.Block, l.Proof))
	ch.usage.bytes = ch.usage.bytes - uint64(len(proof)) + uint64(len(l.Proof))
	return true, nil
}

// readLeaves reads into ch the entries at the positions of leaves, tree by
// tree, with an iterator over each tree's range of them rather than a
// lookup each: a batch's positions lie together, and a lookup that misses
// (a position not held yet, the usual case) costs as much as one that
// hits. Positions spread thinly over their range are left to lookups.
// Callers hold mu.
func (s *Store) readLeaves(ch *change, leaves []store.Leaf) error {
	byTree := map[cid.Cid][]uint64{}
	for _, l := range leaves {
		byTree[l.Tree] = append(byTree[l.Tree], l.Index)
	}
	for tree, idx := range byTree {
		lo, hi := slices.Min(idx), slices.Max(idx)
		if hi-lo >= 2*uint64(len(idx)) {
			continue
		}
		last := leafKey(tree, hi)
		it := s.db.NewIterator(util.BytesPrefix(cidKey(prefixLeaf, tree)), nil)
		for ok := it.Seek(leafKey(tree, lo)); ok && bytes.Compare(it.Key(), last) <= 0; ok = it.Next() {
			if e, found := ch.entry(bytes.Clone(it.Key())); !found {
				v := bytes.Clone(it.Value())
				e.v, e.was, e.read = v, v, true
			}
		}
		it.Release()
		if err := it.Error(); err != nil {
			return dbErr(err)
		}
		// What the iterator did not find is not held.
		for _, i := range idx {
			if e, found := ch.entry(leafKey(tree, i)); !found {
				e.read = true
			}
		}
	}
	return nil
}
