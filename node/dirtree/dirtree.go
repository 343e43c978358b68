// Package dirtree reads trees of directory datasets (store/dirlist): it
// opens a directory's listing and resolves a path inside a tree one
// listing at a time, reading of each only its index and one page.
package dirtree

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
)

// Dataset is an opened dataset, as a reader of a listing needs it.
type Dataset interface {
	dirlist.ReaderAt
	Size() int64
	Mimetype() string
	// Close lets the dataset go (the node holds it against garbage
	// collection until then).
	Close() error
}

// Opener opens datasets by manifest CID, wherever they are.
type Opener interface {
	OpenDataset(ctx context.Context, c cid.Cid) (Dataset, error)
}

// ErrNotDir says a CID or a path names something other than a directory.
var ErrNotDir = errors.New("not a directory")

// ErrBadPath is wrapped by SplitPath's errors: the request's mistake.
var ErrBadPath = errors.New("bad path")

// Dir is an open directory. Its listing reads through the dataset, which
// stays open until Close.
type Dir struct {
	CID cid.Cid
	*dirlist.Listing
	ds Dataset
}

// Close lets the directory's dataset go.
func (d *Dir) Close() error { return d.ds.Close() }

// OpenDir opens directory c: its manifest, and its listing's index,
// checked. A dataset that is not a directory is ErrNotDir.
func OpenDir(ctx context.Context, o Opener, c cid.Cid) (*Dir, error) {
	ds, err := o.OpenDataset(ctx, c)
	if err != nil {
		return nil, err
	}
	if ds.Mimetype() != dirlist.Mimetype {
		ds.Close()
		return nil, fmt.Errorf("%s: %w", store.CIDText(c), ErrNotDir)
	}
	l, err := dirlist.Open(ctx, ds, ds.Size())
	if err != nil {
		ds.Close()
		return nil, fmt.Errorf("directory %s: %w", store.CIDText(c), err)
	}
	return &Dir{CID: c, Listing: l, ds: ds}, nil
}

// SplitPath splits a path inside a tree ("a/b.txt") into its names. The
// empty path is the root. An absolute path, an empty segment ("a//b",
// "a/"), "." or ".." are refused: a path names one entry one way.
func SplitPath(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%w %q: absolute; paths are relative to the directory", ErrBadPath, p)
	}
	segs := strings.Split(p, "/")
	for _, s := range segs {
		if err := dirlist.CheckName(s); err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrBadPath, p, err)
		}
	}
	return segs, nil
}

// NotFound is the error of a path with no entry: it wraps
// dirlist.ErrNotExist and store.ErrNotFound, so that the API answers 404
// and the mount ENOENT.
type NotFound struct{ Path string }

func (e *NotFound) Error() string { return fmt.Sprintf("%s: no such file or directory", e.Path) }

func (e *NotFound) Is(target error) bool {
	return target == dirlist.ErrNotExist || target == store.ErrNotFound
}

// Resolve finds the entry at segs under directory root; no segments is
// the root itself, as an entry of type Dir.
func Resolve(ctx context.Context, o Opener, root cid.Cid, segs []string) (dirlist.Entry, error) {
	d, err := OpenDir(ctx, o, root)
	if err != nil {
		return dirlist.Entry{}, err
	}
	e := dirlist.Entry{Type: dirlist.Dir, Size: d.Len(), CID: root}
	for i, name := range segs {
		if e.Type != dirlist.Dir {
			d.Close()
			return dirlist.Entry{}, fmt.Errorf("%s: %w", strings.Join(segs[:i], "/"), ErrNotDir)
		}
		if i > 0 {
			if d, err = OpenDir(ctx, o, e.CID); err != nil {
				return dirlist.Entry{}, fmt.Errorf("%s: %w", strings.Join(segs[:i], "/"), err)
			}
		}
		e, err = d.Lookup(ctx, name)
		d.Close()
		if errors.Is(err, dirlist.ErrNotExist) {
			return dirlist.Entry{}, &NotFound{Path: strings.Join(segs[:i+1], "/")}
		}
		if err != nil {
			return dirlist.Entry{}, err
		}
	}
	if len(segs) == 0 {
		d.Close()
	}
	return e, nil
}
