package dirlist

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// page is what the index says of one page.
type page struct {
	off, len uint64 // where its bytes are in the listing
	count    uint64 // its entries
	first    string // its first entry's name
}

// Writer encodes a listing to an io.Writer as entries come, holding one
// page and the index (a first name per page), never the whole listing.
type Writer struct {
	w       *bufio.Writer
	cur     []byte // the open page's entries, encoded
	count   uint64 // entries in cur
	pages   []page
	off     uint64 // bytes written so far
	last    string
	entries uint64
	index   int // encoded size of the index so far
	err     error
}

// NewWriter starts a listing on w.
func NewWriter(w io.Writer) *Writer {
	lw := &Writer{w: bufio.NewWriterSize(w, MaxPageBytes)}
	lw.write(append([]byte(magic), version))
	return lw
}

func (lw *Writer) write(b []byte) {
	if lw.err != nil {
		return
	}
	_, lw.err = lw.w.Write(b)
	lw.off += uint64(len(b))
}

// Entries is how many entries were added.
func (lw *Writer) Entries() uint64 { return lw.entries }

// Add appends e, which must sort after every entry added before it (by
// name bytes, no name twice) and pass Entry.Check.
func (lw *Writer) Add(e Entry) error {
	if lw.err != nil {
		return lw.err
	}
	if err := e.Check(); err != nil {
		return fmt.Errorf("directory entry: %w", err)
	}
	if lw.entries > 0 && e.Name <= lw.last {
		return fmt.Errorf("directory entry %q added after %q: entries go in increasing order of name bytes, each name once", e.Name, lw.last)
	}
	enc := appendEntry(nil, e)
	// The page's count is written before it: a varint of at most 3 bytes
	// for the entries a 64 KiB page can hold.
	if lw.count > 0 && binary.MaxVarintLen16+len(lw.cur)+len(enc) > MaxPageBytes {
		if err := lw.flush(); err != nil {
			return err
		}
	}
	if lw.count == 0 {
		if len(lw.pages) == MaxPages {
			return fmt.Errorf("directory of more than %d pages of entries: too large", MaxPages)
		}
		lw.index += 3*binary.MaxVarintLen64 + 1 + len(e.Name)
		if lw.index > MaxIndexBytes-2*binary.MaxVarintLen64 {
			return fmt.Errorf("directory's index over %d bytes: too many entries", MaxIndexBytes)
		}
		lw.pages = append(lw.pages, page{first: e.Name})
	}
	lw.cur = append(lw.cur, enc...)
	lw.count++
	lw.entries++
	lw.last = e.Name
	return nil
}

// flush writes the open page.
func (lw *Writer) flush() error {
	p := &lw.pages[len(lw.pages)-1]
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen16+len(lw.cur)), lw.count)
	b = append(b, lw.cur...)
	p.off, p.len, p.count = lw.off, uint64(len(b)), lw.count
	lw.write(b)
	lw.cur, lw.count = lw.cur[:0], 0
	return lw.err
}

// Close writes the last page, the index and the trailer, and flushes.
func (lw *Writer) Close() error {
	if lw.count > 0 {
		if err := lw.flush(); err != nil {
			return err
		}
	}
	idx := appendIndex(nil, lw.pages, lw.entries)
	lw.write(idx)
	lw.write(append(binary.BigEndian.AppendUint32(nil, uint32(len(idx))), trailerMagic...))
	if lw.err != nil {
		return lw.err
	}
	lw.err = lw.w.Flush()
	return lw.err
}

// appendIndex encodes the index: page count, entry count, then per page
// its length, entry count and first name.
func appendIndex(b []byte, pages []page, entries uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(pages)))
	b = binary.AppendUvarint(b, entries)
	for _, p := range pages {
		b = binary.AppendUvarint(b, p.len)
		b = binary.AppendUvarint(b, p.count)
		b = binary.AppendUvarint(b, uint64(len(p.first)))
		b = append(b, p.first...)
	}
	return b
}
