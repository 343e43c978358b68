package repo

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// recount rebuilds the index entries, the pack records and the usage record
// from the leaf entries and the packs, and drops leaves whose block is gone.
// It runs at Open, before the store is shared, when the usage record is
// missing or LevelDB had to be recovered.
//
// Each index entry is checked against the header of the record it points
// at, without hashing the data (Verify does that). Then every pack's
// records are walked for blocks whose entry is missing, which are hashed
// and adopted if they match their CID. Which records count as such needs
// care, because a pack also holds the records of deleted blocks until
// compaction, and they look the same:
//   - a record of a block that a leaf names is adopted: the leaf says the
//     block is held, so it is its entry that was lost;
//   - if the index has no entry at all (its files were lost), every record
//     is adopted, and unreferenced blocks deleted since their pack was last
//     compacted come back with the rest: salvaging the data comes first;
//   - otherwise a record no entry or leaf names is taken for dead. An entry
//     of an unreferenced block lost with part of the index loses the block
//     (LevelDB's recovery rebuilds the index from all its tables, so this
//     takes a damaged table, which loses leaves too).
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
	var proofBytes uint64 // of the leaves kept: they count as used
	if err := s.each(prefixLeaf, ro, func(k, v []byte) error {
		bc, proof, err := decodeLeaf(v)
		if err != nil {
			s.log.Warn("repo: dropping malformed leaf entry", "key", fmt.Sprintf("%x", k))
			w.b.Delete(k)
			return w.maybeFlush()
		}
		refs[bc.KeyString()]++
		proofBytes += uint64(len(proof))
		return nil
	}); err != nil {
		return fmt.Errorf("recount leaves: %w", err)
	}

	packs, err := s.listPacks()
	if err != nil {
		return fmt.Errorf("recount: %w", err)
	}
	defer func() {
		for _, p := range packs {
			p.f.Close()
		}
	}()

	var u usage
	metas := map[uint32]packMeta{}
	held := map[string]bool{} // referenced blocks found held
	keep := func(c cid.Cid, x blockIndex) error {
		k := c.KeyString()
		if _, ok := refs[k]; ok {
			held[k] = true
		}
		x.refs = refs[k]
		u.blocks++
		u.bytes += x.size
		m := metas[x.pack]
		m.live++
		m.liveBytes += x.recordLen(c)
		m.end = max(m.end, x.off+x.size)
		metas[x.pack] = m
		w.b.Put(indexKey(c), x.encode())
		return w.maybeFlush()
	}

	// Index entries, as the records they point at confirm them.
	lost, entries := 0, 0
	if err := s.each(prefixIndex, ro, func(k, v []byte) error {
		entries++
		c, err := cid.Cast(k[1:])
		if err == nil {
			var x blockIndex
			if x, err = decodeIndex(v); err == nil && packs[x.pack].holds(c, x) {
				return keep(c, x)
			}
		}
		lost++
		w.b.Delete(k)
		return w.maybeFlush()
	}); err != nil {
		return fmt.Errorf("recount blocks: %w", err)
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("recount: %w", err)
	}

	// Records that no entry names.
	adopted := map[string]bool{} // not yet visible to db.Has before a flush
	for _, n := range slices.Sorted(maps.Keys(packs)) {
		p := packs[n]
		end, err := scanPack(p.f, p.size, func(c cid.Cid, r blockIndex) error {
			k := c.KeyString()
			if _, named := refs[k]; adopted[k] || !named && entries > 0 {
				return nil
			}
			if ok, err := s.db.Has(indexKey(c), nil); err != nil || ok {
				return err
			}
			data := make([]byte, r.length()) // the zeros past r.size are the buffer's
			if _, err := p.f.ReadAt(data[:r.size], int64(r.off)); err != nil {
				return err
			}
			if store.Verify(store.Block{CID: c, Data: data}) != nil {
				return nil
			}
			adopted[k] = true
			r.pack = n
			return keep(c, r)
		})
		if err != nil {
			return fmt.Errorf("recount pack %s: %w", s.packPath(n), err)
		}
		if end < p.size {
			s.log.Info("repo: a pack ends in a torn or unreadable record; the rest of it is dead",
				"pack", s.packPath(n), "offset", end, "size", p.size)
		}
		if m, ok := metas[n]; ok {
			// Dead records up to the end of the walk count as dead; the rest
			// is cut off at openPacks.
			m.end = max(m.end, end)
			metas[n] = m
		}
	}

	// Leaves whose block is gone.
	dropped := 0
	if len(held) < len(refs) {
		if err := s.each(prefixLeaf, ro, func(k, v []byte) error {
			bc, proof, err := decodeLeaf(v)
			if err != nil || held[bc.KeyString()] {
				return nil
			}
			dropped++
			proofBytes -= uint64(len(proof))
			w.b.Delete(k)
			return w.maybeFlush()
		}); err != nil {
			return fmt.Errorf("recount leaves: %w", err)
		}
	}
	if lost > 0 {
		s.log.Warn("repo: dropped index entries whose record is missing or damaged", "blocks", lost)
	}
	if len(adopted) > 0 {
		s.log.Warn("repo: indexed pack records that had no index entry", "blocks", len(adopted))
	}
	if dropped > 0 {
		s.log.Warn("repo: dropped leaf entries whose block is missing", "leaves", dropped)
	}

	// Pack records: packs with no live record get none, and openPacks
	// removes them.
	if err := s.each(prefixPack, ro, func(k, _ []byte) error {
		w.b.Delete(k)
		return w.maybeFlush()
	}); err != nil {
		return fmt.Errorf("recount packs: %w", err)
	}
	for n, m := range metas {
		w.b.Put(packKey(n), m.encode())
	}
	u.bytes += proofBytes
	w.b.Put(keyFormat, []byte{formatVersion})
	w.b.Put(keyUsage, u.encode())
	if err := w.flush(); err != nil {
		return fmt.Errorf("recount: %w", err)
	}
	s.usage = u
	s.log.Info("repo: recounted usage", "blocks", u.blocks, "bytes", u.bytes)
	return nil
}

// packFile is a pack opened for a recount.
type packFile struct {
	f    *os.File
	size uint64
}

// holds reports whether the record of block c that x describes is in the
// pack, whole, by its header.
func (p *packFile) holds(c cid.Cid, x blockIndex) bool {
	if p == nil {
		return false
	}
	hl := headerLen(c, x.size, x.zeros)
	if x.off < hl || x.off+x.size > p.size {
		return false
	}
	want := appendHeader(nil, c, x.size, x.zeros)
	got := make([]byte, len(want))
	_, err := p.f.ReadAt(got, int64(x.off-hl))
	return err == nil && bytes.Equal(got, want)
}

// listPacks opens every pack file read-only.
func (s *Store) listPacks() (map[uint32]*packFile, error) {
	entries, err := os.ReadDir(s.packsDir)
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	packs := map[uint32]*packFile{}
	for _, e := range entries {
		n, ok := parsePackName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(s.packPath(n))
		if err == nil {
			var info os.FileInfo
			if info, err = f.Stat(); err == nil {
				packs[n] = &packFile{f: f, size: uint64(info.Size())}
				continue
			}
			f.Close()
		}
		for _, p := range packs {
			p.f.Close()
		}
		return nil, fmt.Errorf("open pack: %w", err)
	}
	return packs, nil
}

// initialise stamps a new, empty database.
func (s *Store) initialise() error {
	var b leveldb.Batch
	b.Put(keyFormat, []byte{formatVersion})
	b.Put(keyUsage, usage{}.encode())
	return s.db.Write(&b, nil)
}

// isEmpty reports whether the database holds no key at all and packs/ no
// file: a new repository rather than one whose index went missing.
func (s *Store) isEmpty() (bool, error) {
	it := s.db.NewIterator(nil, nil)
	defer it.Release()
	if it.First() {
		return false, nil
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(s.packsDir)
	return len(entries) == 0, err
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
