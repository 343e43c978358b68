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

// Get implements store.BlockStore. The returned Data is the buffer goleveldb
// allocated for this read; it is handed over, not copied again.
func (s *Store) Get(ctx context.Context, c cid.Cid) (store.Block, error) {
	if err := s.enter(ctx); err != nil {
		return store.Block{}, fmt.Errorf("repo: get %s: %w", store.CIDText(c), err)
	}
	data, err := s.db.Get(dataKey(c), nil)
	if err != nil {
		return store.Block{}, fmt.Errorf("repo: get %s: %w", store.CIDText(c), dbErr(err))
	}
	return store.Block{CID: c, Data: data}, nil
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
func (s *Store) Put(ctx context.Context, b store.Block) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: put %s: %w", store.CIDText(b.CID), err)
	}
	if !b.CID.Defined() {
		return fmt.Errorf("repo: put: undefined CID: %w", store.ErrInvalidBlock)
	}
	// Hash outside the lock: it is the costly part and needs no state.
	if err := store.Verify(b); err != nil {
		return fmt.Errorf("repo: put: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	ik := indexKey(b.CID)
	held, err := s.db.Has(ik, nil)
	if err != nil {
		return fmt.Errorf("repo: put %s: %w", store.CIDText(b.CID), dbErr(err))
	}
	if held {
		return nil
	}
	size := uint64(len(b.Data))
	if s.quota > 0 && s.usage.bytes+size > s.quota {
		return fmt.Errorf("repo: put %s: %d bytes with %d of %d used: %w",
			store.CIDText(b.CID), size, s.usage.bytes, s.quota, store.ErrQuotaExceeded)
	}
	batch := &s.batch
	batch.Reset()
	batch.Put(dataKey(b.CID), b.Data)
	batch.Put(ik, blockIndex{size: size}.encode())
	next := usage{blocks: s.usage.blocks + 1, bytes: s.usage.bytes + size}
	if err := s.commit(batch, next); err != nil {
		return fmt.Errorf("repo: put %s: %w", store.CIDText(b.CID), err)
	}
	return nil
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
	batch := new(leveldb.Batch)
	next := s.usage
	dropBlock(batch, c, x, &next)
	if err := s.commit(batch, next); err != nil {
		return fmt.Errorf("repo: delete %s: %w", store.CIDText(c), err)
	}
	return nil
}

// index reads a block's index entry (ErrNotFound when not held).
func (s *Store) index(c cid.Cid) (blockIndex, error) {
	v, err := s.db.Get(indexKey(c), nil)
	if err != nil {
		return blockIndex{}, dbErr(err)
	}
	x, err := decodeIndex(v)
	if err != nil {
		return blockIndex{}, fmt.Errorf("index of %s: %w", store.CIDText(c), err)
	}
	return x, nil
}

// dropBlock adds the removal of a block to b and takes it out of u.
func dropBlock(b *leveldb.Batch, c cid.Cid, x blockIndex, u *usage) {
	b.Delete(dataKey(c))
	b.Delete(indexKey(c))
	u.blocks--
	u.bytes -= x.size
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
