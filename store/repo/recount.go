package repo

import (
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// recount rebuilds the index entries and the usage record from the block
// data and leaf entries themselves, and drops leaves whose block is gone.
// It runs at Open, before the store is shared.
//
// The usage record is deleted first and written last, so a recount that is
// interrupted is simply done again at the next Open; intermediate batches
// may therefore be flushed freely.
func (s *Store) recount() error {
	if err := s.db.Delete(keyUsage, nil); err != nil {
		return fmt.Errorf("recount: %w", err)
	}
	w := &batchWriter{db: s.db}
	ro := &opt.ReadOptions{DontFillCache: true}

	// References, as the leaves state them.
	refs := map[string]uint64{}
	if err := s.each(prefixLeaf, ro, func(k, v []byte) error {
		bc, _, err := decodeLeaf(v)
		if err != nil {
			s.log.Warn("repo: dropping malformed leaf entry", "key", fmt.Sprintf("%x", k))
			w.b.Delete(k)
			return w.maybeFlush()
		}
		refs[bc.KeyString()]++
		return nil
	}); err != nil {
		return fmt.Errorf("recount leaves: %w", err)
	}

	// Blocks, as their data states them; one fresh index entry each.
	var u usage
	held := map[string]bool{}
	if err := s.each(prefixData, ro, func(k, v []byte) error {
		c := string(k[1:])
		if _, ok := refs[c]; ok {
			held[c] = true
		}
		u.blocks++
		u.bytes += uint64(len(v))
		w.b.Put(append([]byte{prefixIndex}, c...), blockIndex{refs: refs[c], size: uint64(len(v))}.encode())
		return w.maybeFlush()
	}); err != nil {
		return fmt.Errorf("recount blocks: %w", err)
	}

	// Index entries of blocks whose data is gone.
	if err := s.each(prefixIndex, ro, func(k, _ []byte) error {
		ok, err := s.db.Has(append([]byte{prefixData}, k[1:]...), nil)
		if err != nil || ok {
			return err
		}
		w.b.Delete(k)
		return w.maybeFlush()
	}); err != nil {
		return fmt.Errorf("recount index: %w", err)
	}

	// Leaves whose block is gone.
	dropped := 0
	if len(held) < len(refs) {
		if err := s.each(prefixLeaf, ro, func(k, v []byte) error {
			bc, _, err := decodeLeaf(v)
			if err != nil || held[bc.KeyString()] {
				return nil
			}
			dropped++
			w.b.Delete(k)
			return w.maybeFlush()
		}); err != nil {
			return fmt.Errorf("recount leaves: %w", err)
		}
	}
	if dropped > 0 {
		s.log.Warn("repo: dropped leaf entries whose block is missing", "leaves", dropped)
	}

	w.b.Put(keyFormat, []byte{formatVersion})
	w.b.Put(keyUsage, u.encode())
	if err := w.flush(); err != nil {
		return fmt.Errorf("recount: %w", err)
	}
	s.usage = u
	s.log.Info("repo: recounted usage", "blocks", u.blocks, "bytes", u.bytes)
	return nil
}

// initialise stamps a new, empty database.
func (s *Store) initialise() error {
	var b leveldb.Batch
	b.Put(keyFormat, []byte{formatVersion})
	b.Put(keyUsage, usage{}.encode())
	return s.db.Write(&b, nil)
}

// isEmpty reports whether the database holds no key at all.
func (s *Store) isEmpty() (bool, error) {
	it := s.db.NewIterator(nil, nil)
	defer it.Release()
	return !it.First(), it.Error()
}

// each calls fn with every key and value under prefix.
func (s *Store) each(prefix byte, ro *opt.ReadOptions, fn func(k, v []byte) error) error {
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefix}), ro)
	defer it.Release()
	for it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// batchWriter bounds the memory of a recount of a large repository.
type batchWriter struct {
	db *leveldb.DB
	b  leveldb.Batch
}

func (w *batchWriter) maybeFlush() error {
	if w.b.Len() < 4096 {
		return nil
	}
	return w.flush()
}

func (w *batchWriter) flush() error {
	if err := w.db.Write(&w.b, nil); err != nil {
		return err
	}
	w.b.Reset()
	return nil
}
