package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/util"
	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/store"
)

// Pack files. Under the repository directory, next to LevelDB's own files:
//
//	packs/<n>.pack  append-only records, n a decimal number without leading zeros
//
// A record is one block, in one of two forms:
//
//	0xB5 | uvarint len(CID) | CID bytes | uvarint len(data) | data
//	0xB6 | uvarint len(CID) | CID bytes | uvarint len(data) | uvarint zeros | data
//
// The second is a block that ends in zeros zero bytes past data, which are
// not written: the padding of a dataset's last block (Codex pads it to the
// block size, and hashes it so) and the parity computed over padding. The
// block is still its whole length to everyone: a read fills in the zeros,
// its CID is checked over all of it, and it goes out to peers padded. The
// quota and Usage count the bytes stored. A block keeps the first form
// unless at least store.MinPadding of its bytes are spared.
//
// Records are only ever appended, to one active pack at a time, and a pack
// never changes once it is no longer active. When the next record would
// take the active pack past Options' pack size, a new pack with the next
// number becomes active. The active pack has disk space reserved ahead of
// its records, as much again as it holds, and gives back what it did not
// use once it is no longer active (preallocate, trim). Otherwise space goes back to the disk only when
// compaction copies a pack's live records into the active pack and then
// deletes the pack (compact.go).
//
// The header makes a pack self-describing, so that a recount can rebuild
// lost index entries from the packs (recount.go). An index entry's offset
// is that of the data, past the header, so that a read is one pread of
// exactly the block; the header's length follows from the CID and the size
// (headerLen), so the record's start needs no field either.
const (
	packsDirName = "packs"
	packSuffix   = ".pack"
	recordMagic  = 0xB5
	zerosMagic   = 0xB6

	// defaultPackBytes bounds a pack (a bigger block still gets a pack of its
	// own). Large packs keep the number of open files small, four per GiB;
	// small ones make each compaction cheaper. 256 MiB is a second or two
	// of disk bandwidth to rewrite.
	defaultPackBytes = 256 << 20
	// defaultFirstReserve is what a new pack reserves on disk before its
	// first record: a fresh node takes 4 MiB, not a whole pack.
	defaultFirstReserve = 4 << 20

	// maxCIDBytes bounds the CID of a record so that a scan of a damaged
	// pack cannot be made to read a huge header. Real CIDs are under 100
	// bytes; only an identity-hash CID could be longer.
	maxCIDBytes = 4096
	// maxPackNumber keeps pack numbers in a uint32.
	maxPackNumber = 1<<32 - 1
)

var (
	// errShortPack: a pack ends before a record its index entry names.
	errShortPack = errors.New("pack is shorter than its index says")
	// errPackMissing: the pack an index entry names has no file.
	errPackMissing = errors.New("pack file is missing")
)

// pack is one open pack file.
type pack struct {
	n uint32
	f *os.File
	// pending counts records appended to the pack whose index commit has
	// not yet happened or failed. A pack with pending records is never
	// retired: an entry may be about to point into it.
	pending atomic.Int64
	// short: the file ended before its last committed record at Open.
	// Appends go to a new pack rather than leave a hole of zeros.
	short bool
}

// packSet is the set of open packs. It is replaced, never changed, so that
// Get can look a pack up without a lock.
type packSet map[uint32]*pack

func (s *Store) packPath(n uint32) string {
	return filepath.Join(s.packsDir, strconv.FormatUint(uint64(n), 10)+packSuffix)
}

// parsePackName returns the number of a pack file name, or false for a name
// that packPath would not produce.
func parsePackName(name string) (uint32, bool) {
	num, ok := strings.CutSuffix(name, packSuffix)
	if !ok || num == "" || (num[0] == '0' && num != "0") {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 32)
	return uint32(n), err == nil
}

func headerLen(c cid.Cid, size, zeros uint64) uint64 {
	k := uint64(c.ByteLen())
	n := 1 + uint64(uvarintLen(k)) + k + uint64(uvarintLen(size))
	if zeros > 0 {
		n += uint64(uvarintLen(zeros))
	}
	return n
}

// stored splits a block's data into the part a record keeps and the count
// of zero bytes after it that it does not (store.Unpadded).
func stored(data []byte) ([]byte, uint64) {
	kept := store.Unpadded(data)
	return kept, uint64(len(data) - len(kept))
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}

func appendHeader(b []byte, c cid.Cid, size, zeros uint64) []byte {
	k := c.KeyString()
	if zeros > 0 {
		b = append(b, zerosMagic)
	} else {
		b = append(b, recordMagic)
	}
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	b = binary.AppendUvarint(b, size)
	if zeros > 0 {
		b = binary.AppendUvarint(b, zeros)
	}
	return b
}

// roll makes a new, empty pack active. Callers hold packMu.
func (s *Store) roll() error {
	if s.nextPack > maxPackNumber {
		return fmt.Errorf("new pack: pack numbers exhausted")
	}
	n := uint32(s.nextPack)
	f, err := os.OpenFile(s.packPath(n), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("new pack: %w", err)
	}
	if s.sync {
		// The pack's name must survive a power cut along with its records.
		if err := syncDir(s.packsDir); err != nil {
			f.Close()
			return fmt.Errorf("new pack: %w", err)
		}
	}
	s.nextPack++
	p := &pack{n: n, f: f}
	s.setPacks(func(m packSet) { m[n] = p })
	if s.active != nil {
		s.trim(s.active, s.tail)
	}
	s.active, s.tail, s.reserved = p, 0, 0
	s.activeN.Store(uint64(n) + 1)
	// The pack that was active may now be compacted.
	s.kick()
	return nil
}

// preallocate reserves disk space for the active pack p from offset from
// on, at least need bytes, leaving its length alone (FALLOC_FL_KEEP_SIZE):
// appends into allocated extents cost the kernel about a fifth less CPU
// than ext4's delayed allocation, and a pack lies in few pieces on disk.
// The reservation is as much again as the pack holds (firstReserve for a
// new one), up to the pack size: a store that holds little takes little
// disk, and a pack that fills takes a handful of reservations. Callers
// hold packMu.
//
// Only when the disk has that much free and preallocMargin to spare: a
// reservation would otherwise take the last free space, which LevelDB's
// journal and everything else on the disk need. A failed fallocate may
// keep what it reserved before failing; truncating to the pack's own
// length gives that back. Without a reservation, appends allocate as they
// go, as before; the next try comes once they pass where it would have
// ended.
func (s *Store) preallocate(p *pack, from, need uint64) {
	to := min(s.packBytes, from+max(s.firstReserve, from))
	to = max(to, from+need)
	s.reserved = to
	want := to - from
	rc, err := p.f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			var st unix.Statfs_t
			if err = unix.Fstatfs(int(fd), &st); err != nil {
				return
			}
			unit := int64(st.Frsize) // statfs counts blocks in fragments where it has them
			if unit <= 0 {
				unit = int64(st.Bsize)
			}
			if free := uint64(st.Bavail) * uint64(unit); free < want+preallocMargin {
				err = fmt.Errorf("%d bytes free, not enough to reserve %d", free, want)
				return
			}
			if err = unix.Fallocate(int(fd), unix.FALLOC_FL_KEEP_SIZE, int64(from), int64(want)); err != nil {
				_ = unix.Ftruncate(int(fd), int64(from))
			}
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		s.log.Debug("repo: pack not preallocated", "pack", s.packPath(p.n), "err", err)
	}
}

// preallocMargin is the free space a pack's reservation must leave.
const preallocMargin = 1 << 30

// trim gives back the space preallocated past end, the pack's last record,
// once p takes no more appends. Truncating to its own length is enough.
func (s *Store) trim(p *pack, end uint64) {
	if err := p.f.Truncate(int64(end)); err != nil {
		s.log.Warn("repo: cannot give back the space preallocated for a pack", "pack", s.packPath(p.n), "err", err)
	}
}

// setPacks replaces the pack set with a changed copy. Callers hold packMu.
func (s *Store) setPacks(change func(packSet)) {
	old := *s.packs.Load()
	m := make(packSet, len(old)+1)
	for n, p := range old {
		m[n] = p
	}
	change(m)
	s.packs.Store(&m)
}

// isActive reports whether pack n takes appends.
func (s *Store) isActive(n uint32) bool { return s.activeN.Load() == uint64(n)+1 }

// readData fills buf with the bytes of the block an index entry points
// at, from byte off of the block on: one pread. buf must fit in the block.
func (s *Store) readData(x blockIndex, buf []byte, off uint64) error {
	p := (*s.packs.Load())[x.pack]
	if p == nil {
		return fmt.Errorf("%w: %s", errPackMissing, s.packPath(x.pack))
	}
	if _, err := p.f.ReadAt(buf, int64(x.off+off)); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w (%d bytes at %d)", s.packPath(x.pack), errShortPack, x.size, x.off)
		}
		return fmt.Errorf("read pack: %w", err)
	}
	return nil
}

// readHeader parses the record header at pos of f, a file of size bytes,
// and returns the record's CID and its data's place: off, size and zeros
// (pack left unset). It fails for anything but a whole record.
func readHeader(f *os.File, pos, size uint64) (cid.Cid, blockIndex, error) {
	// 96 bytes hold the header of every real CID; a longer one takes a
	// second read of the length the first one finds.
	buf := make([]byte, min(96, size-pos))
	for {
		if _, err := f.ReadAt(buf, int64(pos)); err != nil {
			return cid.Undef, blockIndex{}, fmt.Errorf("record at %d: %w", pos, err)
		}
		c, hdr, x, err := parseHeader(buf)
		if errors.Is(err, io.ErrUnexpectedEOF) && hdr > uint64(len(buf)) && uint64(len(buf)) < size-pos {
			buf = make([]byte, min(hdr, size-pos))
			continue
		}
		if err != nil {
			return cid.Undef, blockIndex{}, fmt.Errorf("record at %d: %w", pos, err)
		}
		if x.size > size-pos-hdr {
			return cid.Undef, blockIndex{}, fmt.Errorf("record at %d: %w", pos, io.ErrUnexpectedEOF)
		}
		x.off = pos + hdr
		return c, x, nil
	}
}

// parseHeader parses a record header at the start of b and returns the
// CID, the header's length, and the data's size and zeros. When b is too
// short it fails with io.ErrUnexpectedEOF and, if known, the length the
// header needs.
func parseHeader(b []byte) (cid.Cid, uint64, blockIndex, error) {
	if len(b) == 0 {
		return cid.Undef, 0, blockIndex{}, io.ErrUnexpectedEOF
	}
	if b[0] != recordMagic && b[0] != zerosMagic {
		return cid.Undef, 0, blockIndex{}, errBadRecord
	}
	k, w := binary.Uvarint(b[1:])
	switch {
	case w == 0:
		return cid.Undef, 0, blockIndex{}, io.ErrUnexpectedEOF
	case w < 0 || k > maxCIDBytes:
		return cid.Undef, 0, blockIndex{}, errBadRecord
	}
	need := 1 + uint64(w) + k + 2*binary.MaxVarintLen64
	if uint64(len(b)) < 1+uint64(w)+k {
		return cid.Undef, need, blockIndex{}, io.ErrUnexpectedEOF
	}
	c, err := cid.Cast(b[1+w : 1+uint64(w)+k])
	if err != nil {
		return cid.Undef, 0, blockIndex{}, errBadRecord
	}
	hdr := 1 + uint64(w) + k
	var x blockIndex
	fields := []*uint64{&x.size}
	if b[0] == zerosMagic {
		fields = append(fields, &x.zeros)
	}
	for _, f := range fields {
		n, v := binary.Uvarint(b[hdr:])
		switch {
		case v == 0:
			return cid.Undef, need, blockIndex{}, io.ErrUnexpectedEOF
		case v < 0:
			return cid.Undef, 0, blockIndex{}, errBadRecord
		}
		*f, hdr = n, hdr+uint64(v)
	}
	if b[0] == zerosMagic && x.zeros == 0 {
		return cid.Undef, 0, blockIndex{}, errBadRecord
	}
	return c, hdr, x, nil
}

// scanPack calls fn with every whole record of f, a file of size bytes, in
// order, and returns where the records end: size, unless the pack ends in
// a torn or unreadable record. fn's x has the record's off, size and zeros.
func scanPack(f *os.File, size uint64, fn func(c cid.Cid, x blockIndex) error) (uint64, error) {
	pos := uint64(0)
	for pos < size {
		c, x, err := readHeader(f, pos, size)
		if err != nil {
			return pos, nil
		}
		if err := fn(c, x); err != nil {
			return pos, err
		}
		pos = x.off + x.size
	}
	return pos, nil
}

// openPacks opens the pack files the index knows of, and makes the
// newest one active. Files of packs the index has no record of hold no
// held block (a pack is recorded in the batch of its first block, and its
// record is deleted before its file), so they are removed: packs created
// just before a crash, or retired by a compaction cut off before the
// unlink. Packs are truncated to the end of their last committed record,
// which drops the records a crash cut off between append and commit. It
// runs at Open, before the store is shared.
func (s *Store) openPacks() error {
	metas := map[uint32]packMeta{}
	it := s.db.NewIterator(util.BytesPrefix([]byte{prefixPack}), nil)
	for it.Next() {
		k := it.Key()
		m, err := decodePackMeta(it.Value())
		if len(k) != 5 || err != nil {
			it.Release()
			return fmt.Errorf("pack record %x: %w", k, errBadRecord)
		}
		metas[binary.BigEndian.Uint32(k[1:])] = m
	}
	it.Release()
	if err := it.Error(); err != nil {
		return err
	}

	entries, err := os.ReadDir(s.packsDir)
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	set := packSet{}
	removed := 0
	for _, e := range entries {
		n, ok := parsePackName(e.Name())
		if !ok || !e.Type().IsRegular() {
			s.log.Warn("repo: ignoring a file in packs/ that is not a pack", "path", filepath.Join(s.packsDir, e.Name()))
			continue
		}
		m, ok := metas[n]
		if !ok {
			if err := os.Remove(s.packPath(n)); err != nil {
				return fmt.Errorf("remove unused pack: %w", err)
			}
			removed++
			continue
		}
		p, err := s.openPack(n, m)
		if err != nil {
			for _, p := range set {
				p.f.Close()
			}
			return err
		}
		set[n] = p
	}
	if removed > 0 {
		s.log.Info("repo: removed packs that held no block (created or retired just before a crash)", "packs", removed)
	}

	var newest uint32
	found := false
	for n := range metas {
		if set[n] == nil {
			s.log.Warn("repo: a pack file is missing; its blocks are lost (Verify lists them)", "pack", s.packPath(n))
		}
		if !found || n > newest {
			newest, found = n, true
		}
	}
	s.metas = metas
	s.packs.Store(&set)
	if found {
		s.nextPack = uint64(newest) + 1
		if p := set[newest]; p != nil && metas[newest].end < s.packBytes && !p.short {
			// Appends resume where the last committed record ends, so that
			// restarts do not leave a trail of small packs.
			s.active, s.tail, s.reserved = p, metas[newest].end, 0
			s.activeN.Store(uint64(newest) + 1)
		}
	}
	return nil
}

// openPack opens pack n and truncates it to m.end. It never extends it: a
// pack shorter than its record says lost data to a power cut, and reads of
// the missing part fail rather than return zeros.
func (s *Store) openPack(n uint32, m packMeta) (*pack, error) {
	f, err := os.OpenFile(s.packPath(n), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open pack: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open pack: %w", err)
	}
	size := uint64(info.Size())
	switch {
	case size > m.end:
		if err := f.Truncate(int64(m.end)); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate pack to its last committed record: %w", err)
		}
	case reservedPastEnd(info):
		// Active at a crash (or cut short by one): give back the space
		// reserved past its end by truncating it to its own length. Only
		// then, so that opening leaves the other packs' times alone.
		if err := f.Truncate(int64(size)); err != nil {
			s.log.Warn("repo: cannot give back the space preallocated for a pack", "pack", s.packPath(n), "err", err)
		}
	}
	if size < m.end {
		s.log.Warn("repo: a pack is shorter than its index says; blocks at its end are lost (Verify lists them)",
			"pack", s.packPath(n), "size", size, "want", m.end)
	}
	return &pack{n: n, f: f, short: size < m.end}, nil
}

// reservedPastEnd reports whether a file has disk space allocated beyond
// its last block: a reservation (preallocate) not given back. The file
// system's own blocks for the file (an extent tree, say) are counted too,
// so a few blocks over are not a reservation; one is a pack's worth.
func reservedPastEnd(info os.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Blksize <= 0 {
		return false
	}
	bs := int64(st.Blksize)
	used := (info.Size() + bs - 1) / bs * bs
	return int64(st.Blocks)*512 > used+16*bs
}

// closePacks closes every pack file. Callers hold packMu; no Put is in
// flight any more.
func (s *Store) closePacks() error {
	if s.active != nil {
		s.trim(s.active, s.tail)
	}
	var first error
	for _, p := range *s.packs.Load() {
		if err := p.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.packsClosed = true
	s.active = nil
	s.activeN.Store(0)
	return first
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
