package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// Get implements store.BlockStore. Data is read straight from the block's
// pack into a buffer of the size its index entry records.
func (s *Store) Get(ctx context.Context, c cid.Cid) (store.Block, error) {
	if err := s.enter(ctx); err != nil {
		return store.Block{}, fmt.Errorf("repo: get %s: %w", store.CIDText(c), err)
	}
	x, err := s.index(c)
	if err != nil {
		return store.Block{}, fmt.Errorf("repo: get %s: %w", store.CIDText(c), err)
	}
	data, err := s.read(c, x)
	if err != nil {
		return store.Block{}, fmt.Errorf("repo: get %s: %w", store.CIDText(c), err)
	}
	return store.Block{CID: c, Data: data}, nil
}

// read returns the bytes of block c, whose index entry was x: one pread,
// and no copy; the zeros past what is stored are the new buffer's own.
func (s *Store) read(c cid.Cid, x blockIndex) ([]byte, error) {
	return s.readInto(c, x, nil)
}

// readInto is read into buf when it has the capacity.
func (s *Store) readInto(c cid.Cid, x blockIndex, buf []byte) ([]byte, error) {
	var data []byte
	if uint64(cap(buf)) >= x.length() {
		data = buf[:x.length()]
	} else {
		data = make([]byte, x.length())
	}
	if _, err := s.readAt(c, x, data, 0); err != nil {
		return nil, err
	}
	if s.verify {
		if err := store.Verify(store.Block{CID: c, Data: data}); err != nil {
			return nil, fmt.Errorf("pack %s at %d: %w", s.packPath(x.pack), x.off, err)
		}
	}
	return data, nil
}

// readAt fills p with the bytes of block c from byte off of it on, as far
// as the block goes, x being c's index entry when it was looked up, and
// returns the count: what the pack stores, then the zeros it does not.
// Should compaction move the block and retire its pack
// after the lookup, the read fails and the entry is looked up again, so
// the caller sees the block at its new place or, if it was deleted
// meanwhile, ErrNotFound.
func (s *Store) readAt(c cid.Cid, x blockIndex, p []byte, off uint64) (int, error) {
	for tries := 0; ; tries++ {
		if off > x.length() {
			// Moved, and not the same block after all: the index is damaged.
			return 0, fmt.Errorf("%w: offset %d past the end of a block of %d bytes", store.ErrInvalidBlock, off, x.length())
		}
		p := p[:min(uint64(len(p)), x.length()-off)]
		var stored uint64 // of p, the bytes in the pack; zeros follow
		if off < x.size {
			stored = min(uint64(len(p)), x.size-off)
		}
		err := s.readData(x, p[:stored], off)
		if err == nil {
			clear(p[stored:])
			return len(p), nil
		}
		y, ierr := s.index(c)
		if ierr != nil {
			return 0, ierr
		}
		if y.pack == x.pack && y.off == x.off || tries == 2 {
			// Not a move: the pack lost the bytes behind the store's back.
			if errors.Is(err, errShortPack) || errors.Is(err, errPackMissing) {
				err = fmt.Errorf("%w: %w", store.ErrInvalidBlock, err)
			}
			return 0, err
		}
		x = y
	}
}

// Has implements store.BlockStore.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if err := s.enter(ctx); err != nil {
		return false, fmt.Errorf("repo: has %s: %w", store.CIDText(c), err)
	}
	ok, err := s.db.Has(indexKey(c), nil)
	if err != nil {
		return false, fmt.Errorf("repo: has %s: %w", store.CIDText(c), dbErr(err))
	}
	return ok, nil
}

// Put implements store.BlockStore.
//
// Sequence, and why:
//  1. Verify the bytes: the one hash of the call, outside every lock.
//     Return early if the block is held.
//  2. Check the quota under mu, so that a Put refused early appends
//     nothing.
//  3. Append the record to the active pack under packMu alone: one header
//     and one data pwrite. In sync mode, fsync the pack, outside the locks.
//  4. Under mu, commit the index entry with the usage and pack records,
//     after the authoritative quota check.
//
// A crash after 3 leaves a record that no entry points at, at the end of
// the pack: the next Open truncates it away. A Put that fails at 4 (quota,
// Close, or another Put of the same block that committed first) leaves
// its record dead in the pack, counted as such by the pack's record. The
// block is never held without its record.
func (s *Store) Put(ctx context.Context, b store.Block) error {
	return s.put(ctx, b, nil, nil)
}

// PutLeafBlock implements store.BlockStore: Put's sequence, with the leaf
// committed in the same batch as the block's entry when the block is new.
// That spares a fetched block a second index lookup and a second write of
// LevelDB's journal.
func (s *Store) PutLeafBlock(ctx context.Context, leaf store.Leaf, b store.Block) error {
	if err := store.VerifyLeafBlock(leaf, b); err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	return s.put(ctx, b, &leaf, nil)
}

// put stores b and, unless leaf is nil, records leaf, which names b; unless
// rec is nil, b is a manifest and rec its dataset record, committed with it.
func (s *Store) put(ctx context.Context, b store.Block, leaf *store.Leaf, rec *store.Retention) error {
	fail := func(err error) error {
		if rec != nil {
			return fmt.Errorf("repo: put dataset %s: %w", store.CIDText(b.CID), err)
		}
		if leaf != nil {
			return fmt.Errorf("repo: put leaf %s[%d]: %w", store.CIDText(leaf.Tree), leaf.Index, err)
		}
		return fmt.Errorf("repo: put %s: %w", store.CIDText(b.CID), err)
	}
	if !b.CID.Defined() || b.CID.ByteLen() > maxCIDBytes {
		return fmt.Errorf("repo: put: undefined or oversized CID: %w", store.ErrInvalidBlock)
	}
	s.puts.RLock()
	defer s.puts.RUnlock()
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	if err := store.Verify(b); err != nil {
		return fmt.Errorf("repo: put: %w", err)
	}
	ik := indexKey(b.CID)
	if leaf != nil {
		// Recording the leaf looks the block up anyway: done if it is
		// held, stored below if not (never held, or just collected).
		if err := s.PutLeaf(ctx, *leaf); !errors.Is(err, store.ErrNotFound) {
			return err
		}
	} else if held, err := s.db.Has(ik, nil); err != nil {
		return fail(dbErr(err))
	} else if held {
		if rec != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.putRecord(b.CID, *rec, fail)
		}
		return nil
	}

	// What is stored, and counted against the quota, is the block without
	// the zeros that end it.
	data, zeros := stored(b.Data)
	size := uint64(len(data))
	s.mu.Lock()
	err := s.checkQuota(size)
	s.mu.Unlock()
	if err != nil {
		return fail(err)
	}

	p, off, err := s.appendRecord(b.CID, data, zeros)
	if err != nil {
		return fail(err)
	}
	if s.sync {
		if err = p.f.Sync(); err != nil {
			err = fmt.Errorf("sync pack: %w", err)
		}
	}
	if crashHook != nil && err == nil {
		crashHook(hookAppended)
	}

	s.mu.Lock()
	if err == nil {
		err = s.commitPut(b.CID, ik, blockIndex{size: size, zeros: zeros, pack: p.n, off: off}, leaf, rec)
	}
	// Under mu with the commit, so that compaction never sees the pack
	// without this record pending and without its entry.
	p.pending.Add(-1)
	s.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	return nil
}

// checkQuota refuses size more bytes when the quota has no room for them.
// Callers hold mu.
func (s *Store) checkQuota(size uint64) error {
	if s.quota > 0 && s.usage.bytes+size > s.quota {
		return fmt.Errorf("%d bytes with %d of %d used: %w", size, s.usage.bytes, s.quota, store.ErrQuotaExceeded)
	}
	return nil
}

// checkChange refuses a change that would take the store over its quota:
// one that grows the usage beyond it. Callers hold mu.
func (s *Store) checkChange(ch *change) error {
	if s.quota > 0 && ch.usage.bytes > s.usage.bytes && ch.usage.bytes > s.quota {
		return fmt.Errorf("%d bytes with %d of %d used: %w", ch.usage.bytes-s.usage.bytes, s.usage.bytes, s.quota, store.ErrQuotaExceeded)
	}
	return nil
}

// commitPut makes the block whose record is appended at x held and, unless
// they are nil, records leaf or the dataset record rec too. Callers hold mu.
func (s *Store) commitPut(c cid.Cid, ik []byte, x blockIndex, leaf *store.Leaf, rec *store.Retention) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	held, err := s.db.Has(ik, nil)
	if err != nil {
		return dbErr(err)
	}
	if held { // another Put of the same block committed first
		if leaf != nil {
			return s.putLeafLocked(*leaf)
		}
		if rec != nil {
			ch := s.begin(new(change), new(leveldb.Batch))
			if err := s.setRecord(ch, c, *rec); err != nil {
				return err
			}
			return s.commit(ch)
		}
		return nil
	}
	if err := s.checkQuota(x.size); err != nil {
		return err
	}
	ch := s.begin(&s.change, &s.batch)
	if rec != nil {
		if err := s.setRecord(ch, c, *rec); err != nil {
			return err
		}
	}
	if leaf != nil {
		if _, err := s.setLeaf(ch, *leaf); err != nil {
			return err
		}
		x.refs = 1
	}
	ch.addBlock(s, c, x)
	if err := s.checkChange(ch); err != nil {
		return err
	}
	return s.commit(ch)
}

// Delete implements store.BlockStore.
func (s *Store) Delete(ctx context.Context, c cid.Cid) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: delete %s: %w", store.CIDText(c), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x, err := s.index(c)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("repo: delete %s: %w", store.CIDText(c), err)
	}
	if x.refs > 0 {
		return nil // the leaves own it; DeleteLeaf frees it
	}
	ch := s.begin(new(change), new(leveldb.Batch))
	ch.dropBlock(s, c, x)
	if err := s.commit(ch); err != nil {
		return fmt.Errorf("repo: delete %s: %w", store.CIDText(c), err)
	}
	return nil
}

// ForEach implements store.BlockStore. It scans only the small index entries
// of the codec, never block data; fn sees a consistent snapshot and may call
// back into the store.
func (s *Store) ForEach(ctx context.Context, codec uint64, fn func(cid.Cid) error) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: list %s: %w", store.CodecName(codec), err)
	}
	prefixes := [][]byte{codecPrefix(codec)}
	if codec == cid.DagProtobuf {
		// CIDv0 has no version or codec bytes: it is a bare sha2-256
		// multihash (0x12 0x20) and implies dag-pb.
		prefixes = append(prefixes, []byte{prefixIndex, 0x12, 0x20})
	}
	for _, p := range prefixes {
		if err := s.scan(ctx, p, fn); err != nil {
			return fmt.Errorf("repo: list %s: %w", store.CodecName(codec), err)
		}
	}
	return nil
}

func (s *Store) scan(ctx context.Context, prefix []byte, fn func(cid.Cid) error) error {
	it := s.db.NewIterator(util.BytesPrefix(prefix), &opt.ReadOptions{DontFillCache: true})
	defer it.Release()
	for it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := cid.Cast(it.Key()[1:]) // copies the key, which it reuses
		if err != nil {
			return fmt.Errorf("index key %x: %w", it.Key(), err)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return dbErr(it.Error())
}
