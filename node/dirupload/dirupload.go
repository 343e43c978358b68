// Package dirupload stores a tree of files, read from a tar stream, as
// directory datasets (store/dirlist): every file its own dataset, every
// directory a dataset of its listing, and the root's manifest CID names
// the whole tree.
//
// Memory: file contents stream through to the uploader; what is held is
// the entries of the directories on the path from the root to the entry
// being read, one directory's names at a time for a tree of the usual
// shape. That works because tar writers (GNU tar, bsdtar, Go's
// archive/tar walking a tree, meshfs upload) put each directory's subtree
// together; an archive that comes back to a directory it has left is
// refused rather than buffered.
package dirupload

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store/dirlist"
)

// Uploader stores one dataset and pins it.
type Uploader interface {
	Upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error)
}

// Stats count what a tree held.
type Stats struct {
	Files, Dirs, Symlinks int
	Bytes                 int64
}

// ErrBadArchive is wrapped by every error about the archive itself (as
// opposed to the store): a client's mistake, not the node's.
var ErrBadArchive = errors.New("bad directory archive")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadArchive, fmt.Sprintf(format, args...))
}

// openDir is a directory whose entries are still coming.
type openDir struct {
	path    string // "" for the root
	entries []dirlist.Entry
	names   map[string]bool
}

func (d *openDir) add(e dirlist.Entry) error {
	if d.names[e.Name] {
		where := path.Join(d.path, e.Name)
		return bad("%q appears twice in the archive, or the entries of a directory are not together (write it with tar's default order)", where)
	}
	d.names[e.Name] = true
	d.entries = append(d.entries, e)
	return nil
}

type job struct {
	up    Uploader
	stack []*openDir
	stats Stats
}

// FromTar reads a tar stream and stores its tree; it returns the root
// directory's manifest CID. Regular files, directories and symlinks are
// kept (a symlink's target as written, never followed); hard links and
// special files are refused with an error naming them. Modes other than
// the executable bit and times are not kept, so two copies of a tree give
// the same CID. Paths are taken relative to the archive's root: "./" is
// dropped, and an absolute path or one with ".." is refused.
//
// Each dataset is whole once stored, so a tree that fails half way keeps
// the files and directories it completed (pinned, as uploads are): none
// of them is removed, since any may have been held before under the same
// CID.
func FromTar(ctx context.Context, up Uploader, r io.Reader) (cid.Cid, Stats, error) {
	j := &job{up: up, stack: []*openDir{{names: map[string]bool{}}}}
	c, err := j.run(ctx, tar.NewReader(r))
	if err != nil {
		return cid.Undef, j.stats, fmt.Errorf("upload directory: %w", err)
	}
	return c, j.stats, nil
}

func (j *job) run(ctx context.Context, tr *tar.Reader) (cid.Cid, error) {
	for {
		if err := ctx.Err(); err != nil {
			return cid.Undef, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return cid.Undef, bad("%v", err)
		}
		if err := j.entry(ctx, h, tr); err != nil {
			return cid.Undef, err
		}
	}
	for len(j.stack) > 1 {
		if err := j.closeTop(ctx); err != nil {
			return cid.Undef, err
		}
	}
	return j.store(ctx, j.stack[0])
}

// Clean gives the segments of an archive path relative to its root, or
// an error for a path that leaves it.
func Clean(p string) ([]string, error) {
	if strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("absolute path %q", p)
	}
	var segs []string
	for s := range strings.SplitSeq(strings.TrimSuffix(p, "/"), "/") {
		switch s {
		case ".", "":
			// "./x" and "x/" are how tar writes relative names and
			// directories; an empty segment inside carries nothing either.
			continue
		case "..":
			return nil, fmt.Errorf("path %q climbs out of the tree", p)
		}
		if err := dirlist.CheckName(s); err != nil {
			return nil, fmt.Errorf("path %q: %w", p, err)
		}
		segs = append(segs, s)
	}
	return segs, nil
}

func (j *job) entry(ctx context.Context, h *tar.Header, tr *tar.Reader) error {
	switch h.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // archive-wide PAX records: nothing of the tree
	case tar.TypeLink:
		return bad("%q is a hard link to %q: not supported (archive with --hard-dereference)", h.Name, h.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return bad("%q is a special file (device or fifo): only files, directories and symlinks can be uploaded", h.Name)
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
	default:
		return bad("%q has tar entry type %q, not a file, directory or symlink", h.Name, h.Typeflag)
	}
	segs, err := Clean(h.Name)
	if err != nil {
		return bad("%v", err)
	}
	if len(segs) == 0 {
		if h.Typeflag == tar.TypeDir {
			return nil // "./": the root itself
		}
		return bad("%q names the root but is not a directory", h.Name)
	}
	if err := j.enter(ctx, segs[:len(segs)-1]); err != nil {
		return err
	}
	name := segs[len(segs)-1]
	top := j.stack[len(j.stack)-1]
	switch h.Typeflag {
	case tar.TypeDir:
		return j.push(top, name)
	case tar.TypeSymlink:
		j.stats.Symlinks++
		return top.add(dirlist.Entry{Name: name, Type: dirlist.Symlink, Size: uint64(len(h.Linkname)), Target: h.Linkname})
	}
	if top.names[name] {
		return top.add(dirlist.Entry{Name: name}) // the duplicate's error, before its bytes are stored
	}
	c, err := j.upload(ctx, tr, name, "")
	if err != nil {
		return fmt.Errorf("%s: %w", path.Join(segs...), err)
	}
	j.stats.Files++
	j.stats.Bytes += h.Size
	return top.add(dirlist.Entry{Name: name, Type: dirlist.File, Size: uint64(h.Size), Exec: h.Mode&0o111 != 0, CID: c})
}

// enter makes dirs (segments from the root) the top of the stack: the
// directories not on its path are complete and stored, the missing ones
// opened (a tar need not list a directory before its contents).
func (j *job) enter(ctx context.Context, dirs []string) error {
	want := strings.Join(dirs, "/")
	for {
		top := j.stack[len(j.stack)-1]
		if top.path == "" || want == top.path || strings.HasPrefix(want, top.path+"/") {
			break
		}
		if err := j.closeTop(ctx); err != nil {
			return err
		}
	}
	depth := 0
	if p := j.stack[len(j.stack)-1].path; p != "" {
		depth = strings.Count(p, "/") + 1
	}
	for _, name := range dirs[depth:] {
		if err := j.push(j.stack[len(j.stack)-1], name); err != nil {
			return err
		}
	}
	return nil
}

// push opens directory name in parent, unless it is open already (a tar
// entry for a directory that its contents opened first).
func (j *job) push(parent *openDir, name string) error {
	p := path.Join(parent.path, name)
	if parent.names[name] {
		return parent.add(dirlist.Entry{Name: name})
	}
	for _, d := range j.stack {
		if d.path == p {
			return nil
		}
	}
	j.stack = append(j.stack, &openDir{path: p, names: map[string]bool{}})
	return nil
}

// closeTop stores the top directory and adds it to its parent.
func (j *job) closeTop(ctx context.Context) error {
	d := j.stack[len(j.stack)-1]
	j.stack = j.stack[:len(j.stack)-1]
	n := len(d.entries)
	c, err := j.store(ctx, d)
	if err != nil {
		return err
	}
	return j.stack[len(j.stack)-1].add(dirlist.Entry{Name: path.Base(d.path), Type: dirlist.Dir, Size: uint64(n), CID: c})
}

// store writes d's listing as a dataset. The listing is built in memory:
// it takes about as many bytes as d's entries already do.
func (j *job) store(ctx context.Context, d *openDir) (cid.Cid, error) {
	slices.SortFunc(d.entries, func(a, b dirlist.Entry) int { return strings.Compare(a.Name, b.Name) })
	var buf bytes.Buffer
	w := dirlist.NewWriter(&buf)
	for _, e := range d.entries {
		if err := w.Add(e); err != nil {
			return cid.Undef, bad("directory %q: %v", "/"+d.path, err)
		}
	}
	if err := w.Close(); err != nil {
		return cid.Undef, err
	}
	d.entries, d.names = nil, nil
	j.stats.Dirs++
	// No file name: the name is the parent's to give, and a tree copied
	// under another name keeps its CID.
	c, err := j.upload(ctx, &buf, "", dirlist.Mimetype)
	if err != nil {
		return cid.Undef, fmt.Errorf("directory %q: %w", "/"+d.path, err)
	}
	return c, nil
}

func (j *job) upload(ctx context.Context, r io.Reader, filename, mimetype string) (cid.Cid, error) {
	return j.up.Upload(ctx, r, filename, mimetype)
}
