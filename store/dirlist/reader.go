package dirlist

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"sort"
	"strings"
)

// ReaderAt is the dataset a listing is read from; ctx is the caller's.
type ReaderAt interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// Listing is an opened listing: its index, checked, in memory; pages are
// read when asked for. Safe for concurrent use.
type Listing struct {
	r       ReaderAt
	size    int64
	pages   []page
	entries uint64
}

// Open reads and checks the trailer and index of the listing of size
// bytes in r. Its errors wrap ErrMalformed when the bytes are at fault.
func Open(ctx context.Context, r ReaderAt, size int64) (*Listing, error) {
	if size < minListing {
		return nil, malformed("%d bytes, shorter than the empty listing (%d)", size, minListing)
	}
	head := make([]byte, headerLen)
	if err := readFull(ctx, r, head, 0); err != nil {
		return nil, fmt.Errorf("directory listing header: %w", err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, malformed("header %q is not %q", head[:len(magic)], magic)
	}
	if head[len(magic)] != version {
		return nil, malformed("version %d; this meshfs reads version %d", head[len(magic)], version)
	}
	tr := make([]byte, trailerLen)
	if err := readFull(ctx, r, tr, size-trailerLen); err != nil {
		return nil, fmt.Errorf("directory listing trailer: %w", err)
	}
	if string(tr[4:]) != trailerMagic {
		return nil, malformed("trailer %q is not %q", tr[4:], trailerMagic)
	}
	ilen := int64(binary.BigEndian.Uint32(tr))
	if ilen > MaxIndexBytes || ilen > size-headerLen-trailerLen {
		return nil, malformed("index of %d bytes in a listing of %d (at most %d)", ilen, size, MaxIndexBytes)
	}
	raw := make([]byte, ilen)
	if err := readFull(ctx, r, raw, size-trailerLen-ilen); err != nil {
		return nil, fmt.Errorf("directory listing index: %w", err)
	}
	l := &Listing{r: r, size: size}
	if err := l.decodeIndex(raw, uint64(size-trailerLen-ilen)); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Listing) decodeIndex(raw []byte, pagesEnd uint64) error {
	d := &decoder{b: raw, what: "index"}
	n := d.uvarint(MaxPages, "page count")
	l.entries = d.uvarint(^uint64(0), "entry count")
	if d.err != nil {
		return d.err
	}
	l.pages = make([]page, 0, min(n, uint64(len(raw))))
	off, sum := uint64(headerLen), uint64(0)
	for i := range n {
		p := page{off: off}
		p.len = d.uvarint(MaxPageBytes, "page length")
		p.count = d.uvarint(MaxPageBytes, "page entry count")
		p.first = d.name()
		if d.err != nil {
			return d.err
		}
		if p.len == 0 || p.count == 0 {
			return malformed("index: page %d is empty", i)
		}
		// No entry is shorter than minEntry bytes, so a count that does not
		// fit the page is refused before anything is allocated for it.
		if p.count > p.len/minEntry {
			return malformed("index: page %d of %d bytes cannot hold %d entries", i, p.len, p.count)
		}
		if i > 0 && p.first <= l.pages[i-1].first {
			return malformed("index: page %d starts at %q, not after %q", i, p.first, l.pages[i-1].first)
		}
		off += p.len
		sum += p.count
		l.pages = append(l.pages, p)
	}
	switch {
	case len(d.b) != 0:
		return malformed("index: %d bytes after its last page", len(d.b))
	case off != pagesEnd:
		return malformed("pages end at byte %d, the index starts at %d", off, pagesEnd)
	case sum != l.entries:
		return malformed("index counts %d entries, its pages %d", l.entries, sum)
	}
	return nil
}

// Len is the number of entries.
func (l *Listing) Len() uint64 { return l.entries }

// Pages is the number of pages.
func (l *Listing) Pages() int { return len(l.pages) }

// Page reads and checks page i: its entries, in order.
func (l *Listing) Page(ctx context.Context, i int) ([]Entry, error) {
	p := l.pages[i]
	buf := make([]byte, p.len)
	if err := readFull(ctx, l.r, buf, int64(p.off)); err != nil {
		return nil, fmt.Errorf("directory listing page %d: %w", i, err)
	}
	d := &decoder{b: buf, what: fmt.Sprintf("page %d", i)}
	if n := d.uvarint(MaxPageBytes, "entry count"); d.err == nil && n != p.count {
		return nil, malformed("page %d holds %d entries, the index says %d", i, n, p.count)
	}
	out := make([]Entry, 0, p.count)
	for range p.count {
		e := d.entry()
		if d.err != nil {
			return nil, d.err
		}
		if len(out) == 0 && e.Name != p.first {
			return nil, malformed("page %d starts at %q, the index says %q", i, e.Name, p.first)
		}
		if len(out) > 0 && e.Name <= out[len(out)-1].Name {
			return nil, malformed("page %d: %q after %q, out of order", i, e.Name, out[len(out)-1].Name)
		}
		if i+1 < len(l.pages) && e.Name >= l.pages[i+1].first {
			return nil, malformed("page %d: %q belongs to a later page", i, e.Name)
		}
		out = append(out, e)
	}
	if d.err == nil && len(d.b) != 0 {
		return nil, malformed("page %d: %d bytes after its last entry", i, len(d.b))
	}
	return out, d.err
}

// ErrNotExist is Lookup's answer for a name the directory does not hold.
var ErrNotExist = errors.New("no such entry")

// PageOf is the page that would hold name, -1 if name sorts before
// every entry.
func (l *Listing) PageOf(name string) int {
	return sort.Search(len(l.pages), func(i int) bool { return l.pages[i].first > name }) - 1
}

// Find looks name up in entries, one page as Page returns it.
func Find(entries []Entry, name string) (Entry, bool) {
	j, ok := sort.Find(len(entries), func(j int) int { return strings.Compare(name, entries[j].Name) })
	if !ok {
		return Entry{}, false
	}
	return entries[j], true
}

// Lookup finds name: a binary search of the index, then one page read.
func (l *Listing) Lookup(ctx context.Context, name string) (Entry, error) {
	i := l.PageOf(name)
	if i < 0 {
		return Entry{}, fmt.Errorf("%q: %w", name, ErrNotExist)
	}
	entries, err := l.Page(ctx, i)
	if err != nil {
		return Entry{}, err
	}
	e, ok := Find(entries, name)
	if !ok {
		return Entry{}, fmt.Errorf("%q: %w", name, ErrNotExist)
	}
	return e, nil
}

// All yields every entry in order, a page at a time; it stops at the
// first error, which it yields.
func (l *Listing) All(ctx context.Context) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for i := range l.pages {
			entries, err := l.Page(ctx, i)
			if err != nil {
				yield(Entry{}, err)
				return
			}
			for _, e := range entries {
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

func readFull(ctx context.Context, r ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(ctx, p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(p), off, err)
}
