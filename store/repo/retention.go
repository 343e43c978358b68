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

// Retention records (see store.Retention) live in the index database under
// their own prefix, so they are as durable as the index and survive
// restarts. Each record's tree is also a key under prefixTreeName, changed
// in the same batch, and a dataset's manifest entry and record are
// committed and removed in one batch (PutDataset, DeleteDataset). Changes
// take mu, as every index change does, so that the record and its tree key
// never disagree.

// GetRetention returns the retention record of dataset c (store.ErrNotFound
// when there is none).
func (s *Store) GetRetention(ctx context.Context, c cid.Cid) (store.Retention, error) {
	if err := s.enter(ctx); err != nil {
		return store.Retention{}, fmt.Errorf("repo: get retention %s: %w", store.CIDText(c), err)
	}
	v, err := s.db.Get(retentionKey(c), nil)
	if err != nil {
		return store.Retention{}, fmt.Errorf("repo: get retention %s: %w", store.CIDText(c), dbErr(err))
	}
	r, err := decodeRetention(v)
	if err != nil {
		return store.Retention{}, fmt.Errorf("repo: get retention %s: %w", store.CIDText(c), err)
	}
	return r, nil
}

// PutRetention records r for dataset c, replacing any record of it.
func (s *Store) PutRetention(ctx context.Context, c cid.Cid, r store.Retention) error {
	fail := func(err error) error { return fmt.Errorf("repo: put retention %s: %w", store.CIDText(c), err) }
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putRecord(c, r, fail)
}

// putRecord commits record r of c on its own. Callers hold mu.
func (s *Store) putRecord(c cid.Cid, r store.Retention, fail func(error) error) error {
	ch := s.begin(new(change), new(leveldb.Batch))
	if err := s.setRecord(ch, c, r); err != nil {
		return fail(err)
	}
	if err := s.commit(ch); err != nil {
		return fail(err)
	}
	return nil
}

// setRecord adds to ch record r of c in place of any record c has, and
// moves its tree key. Callers hold mu.
func (s *Store) setRecord(ch *change, c cid.Cid, r store.Retention) error {
	if err := s.dropRecord(ch, c); err != nil {
		return err
	}
	ch.b.Put(retentionKey(c), encodeRetention(r))
	if r.Tree.Defined() {
		ch.b.Put(treeNameKey(r.Tree, c), nil)
	}
	return nil
}

// dropRecord adds to ch the removal of c's record and its tree key, if it
// has one. A malformed record goes too; its tree key, if any, is left to
// the node, which rewrites every record's tree at start. Callers hold mu.
func (s *Store) dropRecord(ch *change, c cid.Cid) error {
	v, err := s.db.Get(retentionKey(c), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return nil
	}
	if err != nil {
		return dbErr(err)
	}
	ch.b.Delete(retentionKey(c))
	if old, err := decodeRetention(v); err == nil && old.Tree.Defined() {
		ch.b.Delete(treeNameKey(old.Tree, c))
	}
	return nil
}

// DeleteRetention removes the retention record of c; none is not an error.
func (s *Store) DeleteRetention(ctx context.Context, c cid.Cid) error {
	return s.deleteRecord(ctx, c, false)
}

// PutDataset implements store.RetentionStore: Put's sequence, with the
// record committed in the batch that makes the manifest held.
func (s *Store) PutDataset(ctx context.Context, m store.Block, r store.Retention) error {
	return s.put(ctx, m, nil, &r)
}

// DeleteDataset implements store.RetentionStore.
func (s *Store) DeleteDataset(ctx context.Context, c cid.Cid) error {
	return s.deleteRecord(ctx, c, true)
}

// deleteRecord removes c's record and, with manifest, the manifest block
// c in the same commit.
func (s *Store) deleteRecord(ctx context.Context, c cid.Cid, manifest bool) error {
	what := map[bool]string{false: "retention", true: "dataset"}[manifest]
	fail := func(err error) error { return fmt.Errorf("repo: delete %s %s: %w", what, store.CIDText(c), err) }
	if err := s.enter(ctx); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.begin(new(change), new(leveldb.Batch))
	if err := s.dropRecord(ch, c); err != nil {
		return fail(err)
	}
	if manifest {
		x, err := ch.index(s, c)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return fail(err)
		case x.refs == 0:
			ch.dropBlock(s, c, x)
		}
	}
	if err := s.commit(ch); err != nil {
		return fail(err)
	}
	return nil
}

// TreeNamed implements store.RetentionStore.
func (s *Store) TreeNamed(ctx context.Context, tree cid.Cid) (bool, error) {
	if err := s.enter(ctx); err != nil {
		return false, fmt.Errorf("repo: tree named %s: %w", store.CIDText(tree), err)
	}
	it := s.db.NewIterator(util.BytesPrefix(cidKey(prefixTreeName, tree)), nil)
	defer it.Release()
	named := it.Next()
	if err := it.Error(); err != nil {
		return false, fmt.Errorf("repo: tree named %s: %w", store.CIDText(tree), dbErr(err))
	}
	return named, nil
}

// ForEachRetention calls fn with every retention record, in key order, and
// stops at fn's first error. It reads a snapshot, so fn may change records.
// A malformed record is skipped with a warning rather than failing the
// listing: the dataset then counts as having no record (pinned).
func (s *Store) ForEachRetention(ctx context.Context, fn func(cid.Cid, store.Retention) error) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: list retention: %w", err)
	}
	// An iterator reads an implicit snapshot of the database.
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixRetention}), &opt.ReadOptions{DontFillCache: true})
	defer it.Release()
	for it.Next() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("repo: list retention: %w", err)
		}
		c, err := cid.Cast(it.Key()[1:])
		if err != nil {
			s.log.Warn("repo: skipping malformed retention key", "key", fmt.Sprintf("%x", it.Key()))
			continue
		}
		r, err := decodeRetention(it.Value())
		if err != nil {
			s.log.Warn("repo: skipping malformed retention record", "cid", store.CIDText(c))
			continue
		}
		if err := fn(c, r); err != nil {
			return fmt.Errorf("repo: list retention: %w", err)
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("repo: list retention: %w", dbErr(err))
	}
	return nil
}
