// Package repo is the on-disk BlockStore of a meshfs node: blocks, their
// reference counts, leaf entries and the usage record all live in one
// goleveldb database, so that every change is a single atomic batch.
package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/meshfs/meshfs/store"
)

// Options configure Open.
type Options struct {
	// QuotaBytes caps the bytes of block data held; 0 means unlimited.
	QuotaBytes uint64
	// Logger receives warnings such as a recovery; nil means slog.Default().
	Logger *slog.Logger
}

// Store is a BlockStore backed by goleveldb. It is safe for concurrent use.
//
// Writes are not fsynced: a batch reaches the kernel before the call returns,
// so killing the process loses nothing, and a power cut may lose the latest
// batches but never half of one, so usage always matches contents.
type Store struct {
	db  *leveldb.DB
	log *slog.Logger

	closed atomic.Bool // checked without mu so readers never wait on writers

	// mu serialises writers: each mutation reads the current state, decides,
	// and commits one batch including the usage record. Holding mu across
	// the whole sequence is what makes quota checks and refcounts race-free.
	mu    sync.Mutex
	usage usage
	quota uint64
	// batch is reused by Put under mu: a fresh 64 KiB batch per block made
	// batch allocation the largest source of garbage during uploads, and
	// db.Write copies the batch, so it is free again once Write returns.
	batch leveldb.Batch
}

var _ store.BlockStore = (*Store)(nil)

// dbOptions are tuned for values of about 64 KiB (one Codex block each).
func dbOptions() *opt.Options {
	return &opt.Options{
		// Block data is hash output or user content that has already been
		// compressed, if at all: Snappy saves nothing on it and costs
		// 15-35% of throughput. Metadata is too small to matter.
		Compression: opt.NoCompression,
		// The defaults (4 MiB buffer, 2 MiB tables) flush and compact after
		// every few dozen blocks, which rewrites each byte ~10 times and
		// measured 56-80 MB/s of puts; 64 MiB for both measured 520-600 MB/s.
		// The cost is up to two write buffers of RAM and a longer journal
		// replay after a crash.
		WriteBuffer:         64 * opt.MiB,
		CompactionTableSize: 64 * opt.MiB,
		// Keep level 1 about ten tables wide, as the defaults intend;
		// otherwise one 64 MiB table already overflows its 10 MiB budget
		// and every flush cascades into level 2.
		CompactionTotalSize: 640 * opt.MiB,
		// Enough to keep the index and usage records and the hottest blocks;
		// the OS page cache holds the rest of the tables.
		BlockCacheCapacity: 64 * opt.MiB,
		// Put checks whether a block is held before writing it, and peers
		// ask for blocks we lack: a bloom filter answers most misses without
		// touching a table.
		Filter: filter.NewBloomFilter(10),
		// The table writer takes a buffer of the full table size (64 MiB)
		// from goleveldb's buffer pool, and the pool keeps every one it has
		// handed out: half a GiB stayed resident after a 512 MiB upload.
		// Without the pool those buffers are ordinary garbage.
		DisableBufferPool: true,
	}
}

// Open opens the repository in dir, creating it if needed.
func Open(dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("repo: create data dir: %w", err)
	}
	o := dbOptions()
	db, err := leveldb.OpenFile(dir, o)
	recovered := false
	switch {
	case err == nil:
	case errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, storage.ErrLocked):
		return nil, fmt.Errorf("repo: data dir %s is in use by another meshfs process: %w", dir, err)
	case lerrors.IsCorrupted(err):
		log.Warn("repo: database is corrupted, attempting recovery", "dir", dir, "err", err)
		db, err = leveldb.RecoverFile(dir, o)
		if err != nil {
			return nil, fmt.Errorf("repo: recover corrupted data dir %s: %w", dir, err)
		}
		recovered = true
	default:
		return nil, fmt.Errorf("repo: open data dir %s: %w", dir, err)
	}

	s := &Store{db: db, log: log, quota: opts.QuotaBytes}
	if err := s.load(recovered); err != nil {
		db.Close()
		return nil, fmt.Errorf("repo: open data dir %s: %w", dir, err)
	}
	return s, nil
}

// load reads the usage record, recounting everything when it is missing
// (a new database, an interrupted recount) or cannot be trusted (a recovery
// may have dropped any part of the data).
func (s *Store) load(recovered bool) error {
	v, err := s.db.Get(keyFormat, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
	case err != nil:
		return err
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("on-disk format %x, this meshfs reads only %d", v, formatVersion)
	}

	if recovered {
		return s.recount()
	}
	v, err = s.db.Get(keyUsage, nil)
	if err == nil {
		if s.usage, err = decodeUsage(v); err == nil {
			return nil
		}
		s.log.Warn("repo: usage record is malformed, recounting", "err", err)
		return s.recount()
	}
	if !errors.Is(err, leveldb.ErrNotFound) {
		return err
	}
	empty, err := s.isEmpty()
	if err != nil {
		return err
	}
	if empty {
		return s.initialise()
	}
	s.log.Warn("repo: usage record is missing, recounting")
	return s.recount()
}

// SetQuota changes the quota; 0 means unlimited. Lowering it below what is
// held deletes nothing: later Puts fail until space is freed.
func (s *Store) SetQuota(bytes uint64) {
	s.mu.Lock()
	s.quota = bytes
	s.mu.Unlock()
}

// Usage implements store.BlockStore.
func (s *Store) Usage(ctx context.Context) (store.Usage, error) {
	if err := s.enter(ctx); err != nil {
		return store.Usage{}, fmt.Errorf("repo: usage: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return store.Usage{Blocks: s.usage.blocks, UsedBytes: s.usage.bytes, QuotaBytes: s.quota}, nil
}

// Close implements store.BlockStore. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("repo: close: %w", err)
	}
	return nil
}

// enter is the common entry check of every method.
func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// dbErr maps goleveldb's sentinels onto the store's, for calls that race
// with Close or miss a key.
func dbErr(err error) error {
	switch {
	case errors.Is(err, leveldb.ErrClosed):
		return store.ErrClosed
	case errors.Is(err, leveldb.ErrNotFound):
		return store.ErrNotFound
	}
	return err
}

// commit writes b and, on success, adopts next as the usage. Callers hold mu.
func (s *Store) commit(b *leveldb.Batch, next usage) error {
	if next != s.usage {
		b.Put(keyUsage, next.encode())
	}
	if err := s.db.Write(b, nil); err != nil {
		return dbErr(err)
	}
	s.usage = next
	return nil
}
