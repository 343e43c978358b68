// Package dirlist reads and writes meshfs's directory listing: the content
// of a directory dataset, whose manifest carries the media type Mimetype.
// docs/directories.md describes the bytes for other implementations.
//
// A listing is a header, a run of pages of entries sorted by name bytes,
// an index of each page's first name, and a trailer giving the index's
// length. The index lets a lookup read the trailer, the index and one page
// whatever the directory's size, and a listing is read page by page, never
// whole. Everything is checked on decode against the limits below, since a
// listing comes from whichever peer uploaded it.
package dirlist

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
)

// Mimetype marks a manifest whose dataset is a directory listing. A Codex
// node stores and serves such a dataset as any other; only meshfs reads it
// as a directory.
const Mimetype = "application/vnd.meshfs.dir"

// Limits every listing is held to, written or read.
const (
	// MaxName is the longest name, Linux's NAME_MAX.
	MaxName = 255
	// MaxTarget is the longest symlink target, PATH_MAX less its NUL.
	MaxTarget = 4095
	// MaxPageBytes bounds one page: one 64 KiB block's worth, so that a
	// lookup reads about one block of entries. The largest entry (a name
	// and a target at their limits) is about 4.4 KiB, so every page holds
	// at least one.
	MaxPageBytes = 64 << 10
	// MaxIndexBytes bounds the index a lookup reads first. At ~30 bytes per
	// page plus its first name it holds tens of thousands of pages, so
	// millions of entries.
	MaxIndexBytes = 1 << 20
	// MaxPages bounds the page count, so the decoded index stays small.
	MaxPages = 1 << 16
	// maxCIDBytes is far more than a CIDv1 with a sha2-256 multihash takes
	// (36 bytes), and less than any garbage length worth allocating.
	maxCIDBytes = 128
)

// ErrMalformed is wrapped by every error about a listing's bytes.
var ErrMalformed = errors.New("malformed directory listing")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Type is what an entry is.
type Type uint8

const (
	File    Type = 1 // a regular file: a dataset of its bytes
	Dir     Type = 2 // a directory: a dataset of its listing
	Symlink Type = 3 // a symbolic link: its target, kept in the entry
)

func (t Type) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// flagExec is the only entry flag: a file someone may execute. Modes
// beyond that differ between copies of one tree (umask, cp without -p)
// and would give the same files different CIDs, so they are not kept.
const flagExec = 1

// Entry is one name in a directory.
type Entry struct {
	Name string
	Type Type
	// Exec is a file's executable bit; always false for the other types.
	Exec bool
	// Size is a file's length in bytes, a directory's number of entries,
	// and a symlink's target length.
	Size uint64
	// CID is the manifest CID of a file's or a directory's dataset; unset
	// for a symlink.
	CID cid.Cid
	// Target is a symlink's target, as it was: never resolved by meshfs.
	Target string
}

// CheckName reports whether name may name an entry: 1 to MaxName bytes,
// no '/' or NUL, and neither "." nor "..". Any other bytes are allowed, as
// on Linux.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxName:
		return fmt.Errorf("name of %d bytes, longer than %d", len(name), MaxName)
	case name == "." || name == "..":
		return fmt.Errorf("name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

// Check reports whether e is an entry a listing may hold.
func (e Entry) Check() error {
	if err := CheckName(e.Name); err != nil {
		return err
	}
	switch e.Type {
	case File, Dir:
		if e.Exec && e.Type != File {
			return fmt.Errorf("%s: a %s cannot be executable", e.Name, e.Type)
		}
		if !e.CID.Defined() || e.CID.Version() != 1 || e.CID.Type() != store.CodecManifest {
			return fmt.Errorf("%s: %s CID %s is not a CIDv1 codex-manifest", e.Name, e.Type, e.CID)
		}
		if len(e.CID.Bytes()) > maxCIDBytes {
			return fmt.Errorf("%s: CID of %d bytes", e.Name, len(e.CID.Bytes()))
		}
		if e.Target != "" {
			return fmt.Errorf("%s: a %s has no target", e.Name, e.Type)
		}
	case Symlink:
		if e.Exec || e.CID.Defined() {
			return fmt.Errorf("%s: a symlink has no CID or executable bit", e.Name)
		}
		if e.Target == "" || len(e.Target) > MaxTarget || strings.IndexByte(e.Target, 0) >= 0 {
			return fmt.Errorf("%s: symlink target of %d bytes (1 to %d, no NUL)", e.Name, len(e.Target), MaxTarget)
		}
		if e.Size != uint64(len(e.Target)) {
			return fmt.Errorf("%s: symlink size %d, target %d bytes", e.Name, e.Size, len(e.Target))
		}
	default:
		return fmt.Errorf("%s: unknown type %d", e.Name, uint8(e.Type))
	}
	return nil
}

// Mode is the entry's permission bits as the mount and a download give
// them: everything readable, directories and executables searchable.
func (e Entry) Mode() uint32 {
	switch {
	case e.Type == Symlink:
		return 0o777
	case e.Type == Dir || e.Exec:
		return 0o755
	}
	return 0o644
}
