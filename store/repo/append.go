package repo

import (
	"fmt"
	"io"
	"os"

	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/meshfs/meshfs/store"
)

// record is a block to append: what its record keeps of it, and the count
// of zeros that end it past that (stored).
type record struct {
	c     cid.Cid
	data  []byte
	zeros uint64
}

// placed is where an appended record went: its pack, and its data's offset.
type placed struct {
	p   *pack
	off uint64
}

// maxIOV is the most buffers one pwritev takes (Linux's IOV_MAX).
const maxIOV = 1024

// appendRecord appends one record; see appendRecords.
func (s *Store) appendRecord(c cid.Cid, data []byte, zeros uint64) (*pack, uint64, error) {
	var at [1]placed
	if err := s.appendRecords([]record{{c: c, data: data, zeros: zeros}}, at[:]); err != nil {
		return nil, 0, err
	}
	return at[0].p, at[0].off, nil
}

// appendRecords appends recs, in order, to the active pack, rolling to a
// new pack whenever the next would overflow it, and notes in at where
// each went. Each pack's pending count includes its records: the caller must
// drop them once their index commit is done or abandoned. When it fails,
// nothing it appended is pending: nothing will point at those records.
//
// Appends are serialised by packMu, which is held for the pwritevs into
// the page cache and nothing else: callers hash before and commit after.
// The records bound for one pack go in one pwritev (of at most maxIOV
// buffers), headers and data alike: a pwrite each would cost a syscall
// and a pass of the file system's write path per buffer. Without
// Options.Sync nothing is fsynced; a Get of a block reads it back from the
// page cache.
func (s *Store) appendRecords(recs []record, at []placed) error {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	if s.packsClosed {
		return store.ErrClosed
	}
	// Every header goes into one buffer of their total length, so that
	// appending one never moves those before it, which iov points at.
	total := 0
	for _, r := range recs {
		total += int(headerLen(r.c, uint64(len(r.data)), r.zeros))
	}
	if cap(s.hdr) < total {
		s.hdr = make([]byte, 0, total)
	}
	hdrs := s.hdr[:0]
	iov, used := s.iov[:0], 0
	defer func() {
		clear(iov[:used]) // no hold on the callers' bytes
		s.iov = iov[:0]
	}()
	start := s.tail // where the records in iov go in the active pack
	done := 0       // records written
	flush := func() error {
		if len(iov) == 0 {
			return nil
		}
		p := s.active
		used = max(used, len(iov))
		if err := writeRecords(p.f, iov, int64(start)); err != nil {
			// The tail goes back: the next record overwrites whatever
			// part of these was written, which nothing points at.
			s.tail = start
			return fmt.Errorf("append to pack %s: %w", s.packPath(p.n), err)
		}
		p.pending.Add(int64(len(iov) / 2))
		done += len(iov) / 2
		start, iov = s.tail, iov[:0]
		return nil
	}
	fail := func(err error) error {
		for _, a := range at[:done] {
			a.p.pending.Add(-1)
		}
		return err
	}
	for i, r := range recs {
		size := uint64(len(r.data))
		n := headerLen(r.c, size, r.zeros) + size
		if s.active == nil || (s.tail > 0 && s.tail+n > s.packBytes) {
			if err := flush(); err != nil {
				return fail(err)
			}
			if err := s.roll(); err != nil {
				return fail(err)
			}
			start = s.tail
		}
		// Written up to the tail first: a reservation that fails gives
		// back what it took by truncating the pack to the tail, which
		// must then be the pack's length.
		if s.tail+n > s.reserved || len(iov)+2 > maxIOV {
			if err := flush(); err != nil {
				return fail(err)
			}
		}
		if s.tail+n > s.reserved {
			s.preallocate(s.active, s.tail, n)
		}
		h := appendHeader(hdrs, r.c, size, r.zeros)
		hdr := h[len(hdrs):]
		hdrs = h
		iov = append(iov, hdr, r.data)
		at[i] = placed{p: s.active, off: s.tail + uint64(len(hdr))}
		s.tail += n
	}
	if err := flush(); err != nil {
		return fail(err)
	}
	return nil
}

// writeRecords writes the buffers of iov one after another at off of f,
// in as few pwritevs as it takes: a short one (the disk filling up part
// way) is followed by another of the rest, which writes it or says why it
// cannot. It consumes iov.
func writeRecords(f *os.File, iov [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	left := 0
	for _, b := range iov {
		left += len(b)
	}
	for left > 0 {
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			for {
				n, werr = unix.Pwritev(int(fd), iov, off)
				if werr != unix.EINTR {
					return true
				}
			}
		}); err != nil {
			return err
		}
		if werr != nil {
			return werr
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off, left = off+int64(n), left-n
		for n > 0 || (len(iov) > 0 && len(iov[0]) == 0) {
			k := min(n, len(iov[0]))
			if iov[0] = iov[0][k:]; len(iov[0]) == 0 {
				iov = iov[1:]
			}
			n -= k
		}
	}
	return nil
}
