// Package repo is the on-disk BlockStore of a meshfs node. Block bytes are
// records appended to large pack files under packs/ (packs.go); a goleveldb
// database beside them is the index: each block's reference count, size and
// place in a pack, the leaf entries with their proofs, a record per pack
// counting its live bytes, the usage record and the format version. Every
// change to the index is one atomic batch that carries the usage and pack
// records it affects with it.
//
// A block is held when its index entry exists, and an index entry always
// points at a record already written: Put appends the record before it
// commits the entry. Removing a block only deletes its entry, which leaves
// its record dead in its pack; compaction (compact.go) later copies the
// live records of mostly dead packs into the active pack, commits the
// entries' new places, and deletes a pack only once the index says nothing
// points into it. A crash can therefore leave records that nothing points
// at, never an entry without its record: at the tail of a pack they are
// truncated away at Open, elsewhere they are dead bytes that compaction
// reclaims.
package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	// QuotaBytes caps the bytes of block data held; 0 means unlimited. It
	// counts live blocks only: the packs on disk also hold dead records
	// (deleted blocks) until compaction rewrites them, so they can take up
	// to about twice the quota (compaction starts once half a pack is
	// dead), plus the pack being written.
	QuotaBytes uint64
	// Logger receives warnings such as a recovery; nil means slog.Default().
	Logger *slog.Logger
	// Sync makes every acknowledged change survive a power cut: the pack is
	// fsynced after a Put's append and before its index commit, which is
	// itself synced. It costs two fsyncs per Put. Without it (the default)
	// a killed process loses nothing acknowledged, because written data
	// sits in the kernel's page cache, but a power cut may lose the latest
	// changes, and may leave blocks whose records lost their bytes; the
	// index and the usage record still agree with each other, and Verify
	// finds such blocks. Compaction syncs regardless: it moves blocks that
	// were acknowledged long ago.
	Sync bool
	// VerifyReads hashes the bytes of every Get and GetLeaf and fails with
	// store.ErrInvalidBlock when they do not match. Off by default: it costs
	// a SHA-256 per 64 KiB read, which would halve local read throughput,
	// and the bytes were verified when they were put; peers verify what
	// they receive anyway. Verify checks every block on demand instead.
	VerifyReads bool

	// packBytes overrides defaultPackBytes; tests use small packs.
	packBytes uint64
	// firstReserve overrides defaultFirstReserve.
	firstReserve uint64
	// noAutoCompact turns off compaction in the background; tests use it
	// to see what Compact does.
	noAutoCompact bool
}

// Store is a BlockStore of pack files indexed by goleveldb. It is safe for
// concurrent use.
type Store struct {
	db        *leveldb.DB
	log       *slog.Logger
	packsDir  string
	sync      bool
	verify    bool
	wo        *opt.WriteOptions // index commits: synced in sync mode
	packBytes uint64
	// firstReserve is the disk space a new active pack reserves; each
	// reservation after it doubles what the pack holds (preallocate).
	firstReserve uint64

	closed atomic.Bool // checked without mu so readers never wait on writers

	// puts is held shared by every Put and Compact for its whole length
	// and exclusively by Close, so that once Close returns nothing appends
	// to a pack any more.
	puts sync.RWMutex

	// mu serialises index changes: each reads the current state, decides,
	// and commits one batch including the usage and pack records. Holding
	// mu across the whole sequence is what makes quota checks, refcounts
	// and pack counters race-free. Appends happen outside it; see Put.
	mu    sync.Mutex
	usage usage
	quota uint64
	metas map[uint32]packMeta // the pack records, as committed
	// batch and change are reused by Put's and PutLeaf's commits under
	// mu: db.Write copies the batch.
	batch    leveldb.Batch
	change   change
	dbClosed bool // under mu; closed is set earlier, to turn new calls away

	// packMu serialises appends and guards the active pack.
	packMu      sync.Mutex
	packs       atomic.Pointer[packSet] // written under packMu
	active      *pack                   // nil: the next append starts a pack
	tail        uint64                  // where the next record of active goes
	reserved    uint64                  // where active's reservation ends, or was tried to
	nextPack    uint64                  // the number of the next new pack
	hdr         []byte                  // record headers of an append
	iov         [][]byte                // the buffers of an append's pwritev
	packsClosed bool
	// activeN is the active pack's number plus one (0: none), readable
	// without packMu.
	activeN atomic.Uint64

	compactMu sync.Mutex    // one compaction at a time
	wake      chan struct{} // kicks the background compactor
	stop      chan struct{} // closed by Close
	stopOnce  sync.Once
	bg        sync.WaitGroup
}

var (
	_ store.BlockStore = (*Store)(nil)
	_ store.LeafReader = (*Store)(nil)
)

// dbOptions suit an index of small records: index entries of ~50 bytes,
// leaf entries of a CID and a proof (a few hundred bytes), the usage and
// pack records. The block bytes, which once made 64 MiB write buffers and
// tables worthwhile, are not in the database, so goleveldb's defaults fit
// and memory stays small: two 4 MiB memtables, 2 MiB tables and an 8 MiB
// block cache.
func dbOptions() *opt.Options {
	return &opt.Options{
		// Keys and values are CIDs, Merkle proofs and varints: hash output
		// that Snappy cannot shrink, so compressing only costs CPU.
		Compression:        opt.NoCompression,
		WriteBuffer:        4 * opt.MiB,
		BlockCacheCapacity: 8 * opt.MiB,
		// Put checks whether a block is held before writing it, and peers
		// ask for blocks we lack: a bloom filter answers most misses without
		// touching a table.
		Filter: filter.NewBloomFilter(10),
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

	s := &Store{
		db:           db,
		log:          log,
		packsDir:     filepath.Join(dir, packsDirName),
		sync:         opts.Sync,
		verify:       opts.VerifyReads,
		wo:           &opt.WriteOptions{Sync: opts.Sync},
		packBytes:    opts.packBytes,
		firstReserve: opts.firstReserve,
		quota:        opts.QuotaBytes,
		nextPack:     1,
		wake:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	if s.packBytes == 0 {
		s.packBytes = defaultPackBytes
	}
	if s.firstReserve == 0 {
		s.firstReserve = defaultFirstReserve
	}
	s.packs.Store(&packSet{})
	if err := s.load(dir, recovered); err != nil {
		db.Close()
		return nil, fmt.Errorf("repo: open data dir %s: %w", dir, err)
	}
	if err := s.openPacks(); err != nil {
		db.Close()
		return nil, fmt.Errorf("repo: open data dir %s: %w", dir, err)
	}
	if !opts.noAutoCompact {
		s.bg.Add(1)
		go s.compactor()
		s.kick() // packs may have been left over the threshold
	}
	return s, nil
}

// load checks the format and reads the usage record, recounting everything
// when it is missing (a new database over existing packs, an interrupted
// recount) or cannot be trusted (a recovery may have dropped any part of
// the index).
func (s *Store) load(dir string, recovered bool) error {
	v, err := s.db.Get(keyFormat, nil)
	switch {
	case errors.Is(err, leveldb.ErrNotFound):
	case err != nil:
		return err
	case len(v) == 1 && (v[0] == formatValues || v[0] == formatFiles):
		how := map[byte]string{formatValues: "with block bytes inside LevelDB", formatFiles: "with one file per block"}[v[0]]
		return fmt.Errorf("%w: it holds format %d, %s; "+
			"this meshfs keeps them in pack files (format %d) and cannot read it. "+
			"No release wrote format %d, so there is no migration: move the directory "+
			"away (or delete it) and let meshfs create a new one, then upload or fetch "+
			"the datasets again", errOldFormat, v[0], how, formatVersion, v[0])
	case len(v) == 1 && v[0] == formatWholeBlocks:
		if err := s.db.Put(keyFormat, []byte{formatVersion}, &opt.WriteOptions{Sync: true}); err != nil {
			return fmt.Errorf("mark format %d: %w", formatVersion, dbErr(err))
		}
	case len(v) == 1 && v[0] == formatProofsUncounted:
		recovered = true // the recount counts them, and upgrades the format
		s.log.Info("repo: counting the leaves' proofs in the store's usage (a one-time recount)")
	case len(v) != 1 || v[0] != formatVersion:
		return fmt.Errorf("on-disk format %x, this meshfs reads only %d", v, formatVersion)
	}

	if err := os.MkdirAll(s.packsDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", s.packsDir, err)
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

// errOldFormat: the directory holds a repository of an unreleased format.
var errOldFormat = errors.New("repository format no longer supported")

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

// Close implements store.BlockStore. It is idempotent, stops compaction
// and waits for Puts in flight: they fail with ErrClosed, leaving at most
// records past the end of the active pack, which the next Open truncates.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.stopOnce.Do(func() { close(s.stop) })
	s.bg.Wait()
	s.puts.Lock()
	defer s.puts.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dbClosed {
		return nil
	}
	s.dbClosed = true
	err := s.db.Close()
	s.packMu.Lock()
	perr := s.closePacks()
	s.packMu.Unlock()
	if err == nil {
		err = perr
	}
	if err != nil {
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

// crashHook, when set (by tests only), is called at the points where a
// crash leaves pack bytes that nothing points at.
var crashHook func(point string)

const (
	hookAppended      = "put: appended, not indexed"
	hookBatchAppended = "put batch: appended, not indexed"
	hookCompacting    = "compact: copies appended and synced, index not committed"
	hookRetired       = "compact: pack retired in the index, file not removed"
)
