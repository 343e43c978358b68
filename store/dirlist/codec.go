package dirlist

import (
	"encoding/binary"

	"github.com/ipfs/go-cid"
)

// The fixed parts of a listing.
const (
	// magic and version open every listing.
	magic   = "MFSD"
	version = 1
	// headerLen is magic and version.
	headerLen = 4 + 1
	// trailerMagic follows the index length in the trailer, so that a
	// listing cut short or padded is seen at once.
	trailerMagic = "MFSI"
	trailerLen   = 4 + 4
	// minListing is the empty directory: header, an index of no pages and
	// no entries, trailer.
	minListing = headerLen + 2 + trailerLen
	// minEntry is the shortest entry: a one-byte name, type, flags, and a
	// symlink's size and one-byte target.
	minEntry = 6
)

// appendEntry encodes e: name length and name, type, flags, size, then a
// CID (length-prefixed) or a symlink's target (its Size bytes).
func appendEntry(b []byte, e Entry) []byte {
	b = binary.AppendUvarint(b, uint64(len(e.Name)))
	b = append(b, e.Name...)
	var flags byte
	if e.Exec {
		flags |= flagExec
	}
	b = append(b, byte(e.Type), flags)
	b = binary.AppendUvarint(b, e.Size)
	if e.Type == Symlink {
		return append(b, e.Target...)
	}
	c := e.CID.Bytes()
	b = binary.AppendUvarint(b, uint64(len(c)))
	return append(b, c...)
}

// decoder reads a listing's parts, failing once with a malformed error
// for the first thing out of bounds; what it returns after a failure is
// zero.
type decoder struct {
	b    []byte
	what string // the part being read, for errors
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(d.what+": "+format, args...)
	}
}

func (d *decoder) uvarint(max uint64, field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint for %s", field)
		return 0
	}
	d.b = d.b[n:]
	if v > max {
		d.fail("%s %d over its limit %d", field, v, max)
		return 0
	}
	return v
}

func (d *decoder) bytes(n uint64, field string) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail("%s of %d bytes, %d left", field, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(field string) byte {
	v := d.bytes(1, field)
	if v == nil {
		return 0
	}
	return v[0]
}

func (d *decoder) name() string {
	n := d.uvarint(MaxName, "name length")
	s := string(d.bytes(n, "name"))
	if d.err == nil {
		if err := CheckName(s); err != nil {
			d.fail("%v", err)
		}
	}
	return s
}

func (d *decoder) entry() Entry {
	e := Entry{Name: d.name()}
	e.Type = Type(d.byte("type"))
	flags := d.byte("flags")
	if flags&^flagExec != 0 {
		d.fail("%q: unknown flags 0x%x", e.Name, flags)
	}
	e.Exec = flags&flagExec != 0
	if e.Type == Symlink {
		e.Size = d.uvarint(MaxTarget, "target length")
		e.Target = string(d.bytes(e.Size, "target"))
	} else {
		e.Size = d.uvarint(^uint64(0), "size")
		raw := d.bytes(d.uvarint(maxCIDBytes, "CID length"), "CID")
		if d.err == nil {
			c, err := cid.Cast(raw)
			if err != nil {
				d.fail("%q: CID: %v", e.Name, err)
			}
			e.CID = c
		}
	}
	if d.err == nil {
		if err := e.Check(); err != nil {
			d.fail("%v", err)
		}
	}
	return e
}
