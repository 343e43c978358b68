package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// Report is what Verify found.
type Report struct {
	Blocks uint64 // held blocks checked
	Bytes  uint64 // bytes read and hashed
	// Damaged are held blocks whose bytes are missing (the pack is gone or
	// too short) or do not hash to the CID: lost to a power cut, a disk
	// error or a hand outside meshfs. The index still counts them, and
	// their leaves still name them; Get of missing bytes fails with
	// store.ErrInvalidBlock, while flipped bytes are served as they are
	// unless Options.VerifyReads is set.
	Damaged []cid.Cid
	// Packs and PackBytes are the pack files and their total size.
	Packs     int
	PackBytes uint64
	// Reclaimable is the part of PackBytes that no index entry points at:
	// records of deleted blocks, old copies of moved ones, and Puts that
	// failed or are in flight. Compaction returns it to the file system,
	// by itself for packs that are more than half dead.
	Reclaimable uint64
	// Foreign lists files in packs/ whose names are not pack files.
	Foreign []string
}

// Verify reads every held block and checks it against its CID, and sums up
// the space of the packs that nothing points at. It changes nothing and
// may run alongside other calls: blocks deleted meanwhile are skipped, and
// the figures are then approximate. Reads do not verify by default (see
// Options.VerifyReads): this is the check, for tests and a scrub such as
// `meshfs repo verify`.
func (s *Store) Verify(ctx context.Context) (Report, error) {
	var r Report
	fail := func(err error) (Report, error) { return r, fmt.Errorf("repo: verify: %w", err) }
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	var live uint64 // bytes of the records that entries point at
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixIndex}), &opt.ReadOptions{DontFillCache: true})
	defer it.Release()
	for it.Next() {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		c, err := cid.Cast(it.Key()[1:])
		if err != nil {
			return fail(fmt.Errorf("index key %x: %w", it.Key(), err))
		}
		x, err := decodeIndex(it.Value())
		if err != nil {
			return fail(fmt.Errorf("index of %s: %w", store.CIDText(c), err))
		}
		data, err := s.read(c, x)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // deleted since the iterator's snapshot
		case errors.Is(err, store.ErrInvalidBlock):
			r.Damaged = append(r.Damaged, c)
		case err != nil:
			return fail(err)
		case store.Verify(store.Block{CID: c, Data: data}) != nil:
			r.Damaged = append(r.Damaged, c)
		}
		r.Blocks++
		r.Bytes += x.size
		live += x.recordLen(c)
	}
	if err := it.Error(); err != nil {
		return fail(dbErr(err))
	}

	entries, err := os.ReadDir(s.packsDir)
	if err != nil {
		return fail(err)
	}
	for _, e := range entries {
		if _, ok := parsePackName(e.Name()); !ok || !e.Type().IsRegular() {
			r.Foreign = append(r.Foreign, filepath.Join(s.packsDir, e.Name()))
			continue
		}
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // retired since the listing
		}
		if err != nil {
			return fail(err)
		}
		r.Packs++
		r.PackBytes += uint64(info.Size())
	}
	if r.PackBytes > live {
		r.Reclaimable = r.PackBytes - live
	}
	return r, nil
}
