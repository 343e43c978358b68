package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/meshfs/meshfs/store"
)

// Compaction gives the space of dead records back to the disk. A pack
// (other than the active one) that is more than half dead is rewritten:
// its live records are copied to the active pack and their entries moved,
// and once no entry points into it, its record and then its file go.
//
// Ordering, and why a crash at any point leaves a consistent store:
//  1. Copy a group of live records into the active pack and fsync it.
//     A crash here leaves copies that nothing points at, at the end of the
//     active pack: Open truncates them.
//  2. Commit, in one synced batch, the entries' new places and both packs'
//     counters, for each record whose entry still points at the old copy
//     (a Delete or another move may have come first: that copy is dead).
//     Every entry points at either the old or the new copy, both whole.
//  3. Once the old pack's record says no entry points into it (live 0),
//     delete that record in a synced batch, then the file. A crash in
//     between leaves a pack file with no record, which Open removes.
//
// The fsyncs are there whatever Options.Sync says: compaction moves blocks
// acknowledged long ago, and without them a power cut could keep the index
// commit and the unlink of the old pack but lose the new copies.
//
// Interrupted anywhere, a compaction is simply done again: the next one
// finds the same pack still over the threshold.

// compactDeadFraction: packs with more dead bytes than this part of their
// length are compacted. At one half, a compaction copies at most as many
// bytes as it frees, and the packs take at most about twice the live bytes.
const compactDeadFraction = 0.5

// compactSettle and compactMaxWait: see settle.
const (
	compactSettle  = time.Second
	compactMaxWait = 10 * time.Second
)

// compactGroupBytes bounds the bytes copied between two index commits, and
// so the fsyncs and synced commits per MiB moved.
const compactGroupBytes = 16 << 20

func overThreshold(m packMeta) bool {
	return m.end > 0 && float64(m.dead()) > compactDeadFraction*float64(m.end)
}

// Compact rewrites every pack that is more than half dead and returns the
// space of its dead records to the file system. Usage does not change. It
// runs in the background by itself whenever a Delete or DeleteLeaf leaves
// a pack over the threshold; this is for maintenance and tests. Reads and
// writes go on meanwhile; Close interrupts it.
func (s *Store) Compact(ctx context.Context) error {
	s.puts.RLock()
	defer s.puts.RUnlock()
	if err := s.enter(ctx); err != nil {
		return fmt.Errorf("repo: compact: %w", err)
	}
	if err := s.compact(ctx); err != nil {
		return fmt.Errorf("repo: compact: %w", err)
	}
	return nil
}

// kick wakes the background compactor, if it sleeps.
func (s *Store) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// compactor runs compactions in the background until Close.
func (s *Store) compactor() {
	defer s.bg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		}
		if !s.settle() {
			return
		}
		// Close sets closed before it stops the compactor and waits for it,
		// and compaction checks closed at every record.
		s.puts.RLock()
		err := s.compact(context.Background())
		s.puts.RUnlock()
		if err != nil && !errors.Is(err, store.ErrClosed) && !errors.Is(err, context.Canceled) {
			s.log.Warn("repo: compaction failed; it is tried again after the next delete", "err", err)
		}
	}
}

// settle waits until compactSettle passes without a kick, or at most
// compactMaxWait, so that a burst of deletes (a dataset going away) is over
// before compaction starts: otherwise it would copy blocks about to be
// deleted. It reports false when the store is closing.
func (s *Store) settle() bool {
	deadline := time.Now().Add(compactMaxWait)
	timer := time.NewTimer(compactSettle)
	defer timer.Stop()
	for {
		select {
		case <-s.stop:
			return false
		case <-timer.C:
			return true
		case <-s.wake:
			if wait := min(compactSettle, time.Until(deadline)); wait > 0 {
				timer.Reset(wait)
			}
		}
	}
}

// compact compacts every pack over the threshold, each at most once.
func (s *Store) compact(ctx context.Context) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	done := map[uint32]bool{}
	for {
		n, ok := s.pickPack(done)
		if !ok {
			return nil
		}
		done[n] = true
		if err := s.compactPack(ctx, n); err != nil {
			return fmt.Errorf("pack %s: %w", s.packPath(n), err)
		}
	}
}

// pickPack chooses the deadest pack over the threshold that is neither
// active nor awaiting commits, nor in done.
func (s *Store) pickPack(done map[uint32]bool) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := *s.packs.Load()
	var (
		best     uint32
		bestDead uint64
		found    bool
	)
	for n, m := range s.metas {
		if done[n] || !overThreshold(m) || s.isActive(n) {
			continue
		}
		if p := set[n]; p != nil && p.pending.Load() > 0 {
			continue
		}
		if !found || m.dead() > bestDead {
			best, bestDead, found = n, m.dead(), true
		}
	}
	return best, found
}

// move is one record copied by compaction, not yet committed.
type move struct {
	c    cid.Cid
	from blockIndex
	to   *pack
	off  uint64
}

// compactPack moves the live records of pack n to the active pack and
// retires it.
func (s *Store) compactPack(ctx context.Context, n uint32) error {
	s.mu.Lock()
	m := s.metas[n]
	s.mu.Unlock()
	p := (*s.packs.Load())[n]
	if m.live > 0 && p != nil {
		if err := s.moveLive(ctx, p, m.end); err != nil {
			return err
		}
	}
	return s.retire(n)
}

// moveLive copies the records of p, up to end, that entries point at.
// Records are found by walking p's headers, which needs no reverse index:
// a record is live exactly when its CID's entry points at it.
func (s *Store) moveLive(ctx context.Context, p *pack, end uint64) error {
	var (
		group      []move
		groupBytes uint64
		buf        []byte
	)
	flush := func() error {
		err := s.commitMoves(group)
		group, groupBytes = group[:0], 0
		return err
	}
	stopped, err := scanPack(p.f, end, func(c cid.Cid, r blockIndex) error {
		off, size := r.off, r.size
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closed.Load() {
			return store.ErrClosed
		}
		x, err := s.index(c)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if x.pack != p.n || x.off != off {
			return nil // dead: a deleted block, or a copy of one held elsewhere
		}
		if uint64(cap(buf)) < size {
			buf = make([]byte, size)
		}
		data := buf[:size]
		if _, err := p.f.ReadAt(data, int64(off)); err != nil {
			return fmt.Errorf("read %s: %w", store.CIDText(c), err)
		}
		to, toOff, err := s.appendRecord(c, data, x.zeros)
		if err != nil {
			return err
		}
		group = append(group, move{c: c, from: x, to: to, off: toOff})
		groupBytes += size
		if groupBytes >= compactGroupBytes {
			return flush()
		}
		return nil
	})
	if ferr := flush(); err == nil {
		err = ferr
	}
	if err == nil && stopped < end {
		// The pack cannot be retired: live records may follow.
		err = fmt.Errorf("unreadable record at offset %d; Verify checks the blocks", stopped)
	}
	return err
}

// commitMoves syncs the packs the group was copied to and then commits the
// new places of the entries that still point at the old copies. It always
// drops the group's pending counts.
func (s *Store) commitMoves(group []move) (err error) {
	if len(group) == 0 {
		return nil
	}
	defer func() {
		s.mu.Lock()
		for _, mv := range group {
			mv.to.pending.Add(-1)
		}
		s.mu.Unlock()
	}()
	var synced []*pack
	for _, mv := range group {
		if slices.Contains(synced, mv.to) {
			continue
		}
		if err := mv.to.f.Sync(); err != nil {
			return fmt.Errorf("sync pack: %w", err)
		}
		synced = append(synced, mv.to)
	}
	if crashHook != nil {
		crashHook(hookCompacting)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dbClosed {
		return store.ErrClosed
	}
	ch := s.begin(new(change), new(leveldb.Batch))
	for _, mv := range group {
		x, err := ch.index(s, mv.c)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if x.pack != mv.from.pack || x.off != mv.from.off {
			continue
		}
		ch.dropRecord(s, mv.c, x)
		x.pack, x.off = mv.to.n, mv.off
		ch.setIndex(mv.c, x)
		ch.addRecord(s, mv.c, x)
	}
	return s.commitWith(ch, &opt.WriteOptions{Sync: true})
}

// retire deletes pack n if nothing points into it and nothing will: no
// live record, not active, no append awaiting its commit.
func (s *Store) retire(n uint32) error {
	s.mu.Lock()
	if s.dbClosed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	m, ok := s.metas[n]
	p := (*s.packs.Load())[n]
	if !ok || m.live > 0 || s.isActive(n) || (p != nil && p.pending.Load() > 0) {
		s.mu.Unlock()
		return nil
	}
	var b leveldb.Batch
	b.Delete(packKey(n))
	if err := s.db.Write(&b, &opt.WriteOptions{Sync: true}); err != nil {
		s.mu.Unlock()
		return dbErr(err)
	}
	delete(s.metas, n)
	s.mu.Unlock()
	if crashHook != nil {
		crashHook(hookRetired)
	}

	// Readers that looked the pack up before it went may still read it:
	// their entries have moved, and a read from the closed file fails and
	// makes them look again (see read).
	s.packMu.Lock()
	s.setPacks(func(set packSet) { delete(set, n) })
	s.packMu.Unlock()
	if p != nil {
		p.f.Close()
	}
	if err := os.Remove(s.packPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
		// The pack has no record any more: the next Open removes it.
		return fmt.Errorf("remove retired pack: %w", err)
	}
	return nil
}
