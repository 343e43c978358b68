package repo

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/meshfs/meshfs/store"
)

// Retention records (see store.Retention) live in the index database under
// their own prefix, so they are as durable as the index and survive
// restarts. Each is one key written on its own: they do not depend on any
// other record, and the node serialises its changes to a dataset's record.

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
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: put retention %s: %w", store.CIDText(c), err)
	}
	if err := s.db.Put(retentionKey(c), encodeRetention(r), s.wo); err != nil {
		return fmt.Errorf("repo: put retention %s: %w", store.CIDText(c), dbErr(err))
	}
	return nil
}

// DeleteRetention removes the retention record of c; none is not an error.
func (s *Store) DeleteRetention(ctx context.Context, c cid.Cid) error {
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: delete retention %s: %w", store.CIDText(c), err)
	}
	if err := s.db.Delete(retentionKey(c), s.wo); err != nil {
		return fmt.Errorf("repo: delete retention %s: %w", store.CIDText(c), dbErr(err))
	}
	return nil
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
