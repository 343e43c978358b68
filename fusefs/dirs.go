package fusefs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/dirlist"
)

// A directory dataset (manifest media type dirlist.Mimetype) is a
// directory of the mount: DIR/<cid>/a/b. Its entries carry their sizes and
// types, so that listing and stat-ing a tree reads only its listings; a
// file's own dataset is opened when the file is, and read as a top-level
// dataset is.

// key names a node of a tree for its inode number: the top directory's
// manifest digest, then each child's sha256 of its parent's key and its
// name. Inode numbers are then stable across lookups and remounts and
// distinct per path, even where a tree holds one file or (empty)
// directory at several paths: the kernel would take nodes that share a
// number for hard links, and go-fuse would make them one.
type key [sha256.Size]byte

func (k key) child(name string) key {
	h := sha256.New()
	h.Write(k[:])
	h.Write([]byte{0})
	h.Write([]byte(name))
	var out key
	h.Sum(out[:0])
	return out
}

func (k key) ino() uint64 {
	ino := binary.BigEndian.Uint64(k[:8]) &^ (1 << 63) // see inoOf
	if ino < 2 {
		ino += 2
	}
	return ino
}

func keyOf(c cid.Cid) key {
	d, _ := store.Digest(c) // parsed manifest CIDs always have one
	return key(d)
}

// isDir reports whether ds is a directory listing.
func isDir(ds Dataset) bool { return ds.Attrs()["mimetype"] == dirlist.Mimetype }

// dir is a directory dataset.
type dir struct {
	fs.Inode
	cfg   *config
	cid   cid.Cid
	key   key
	list  *dirlist.Listing
	count uint64

	// The page last read: ls -l looks every name up in readdir's order,
	// and each lookup would decode the same page again.
	mu       sync.Mutex
	lastPage int
	last     []dirlist.Entry
}

var (
	_ = (fs.InodeEmbedder)((*dir)(nil))
	_ = (fs.NodeLookuper)((*dir)(nil))
	_ = (fs.NodeReaddirer)((*dir)(nil))
	_ = (fs.NodeGetattrer)((*dir)(nil))
	_ = (fs.NodeSetattrer)((*dir)(nil))
	_ = (fs.NodeCreater)((*dir)(nil))
	_ = (fs.NodeMkdirer)((*dir)(nil))
	_ = (fs.NodeMknoder)((*dir)(nil))
	_ = (fs.NodeLinker)((*dir)(nil))
	_ = (fs.NodeSymlinker)((*dir)(nil))
	_ = (fs.NodeUnlinker)((*dir)(nil))
	_ = (fs.NodeRmdirer)((*dir)(nil))
	_ = (fs.NodeRenamer)((*dir)(nil))
	_ = (fs.NodeSetxattrer)((*dir)(nil))
	_ = (fs.NodeRemovexattrer)((*dir)(nil))
)

// openDir reads the listing's index of directory dataset ds. The error
// is an errno, logged.
func openDir(ctx context.Context, cfg *config, c cid.Cid, k key, ds Dataset) (*dir, syscall.Errno) {
	lctx, cancel := context.WithTimeout(ctx, cfg.lookupTimeout)
	defer cancel()
	l, err := dirlist.Open(lctx, ds, ds.Size())
	if err != nil {
		return nil, cfg.errno(ctx, lctx, "open directory", c, err)
	}
	return &dir{cfg: cfg, cid: c, key: k, list: l, count: l.Len(), lastPage: -1}, 0
}

// errno maps an error of a lookup or listing to what the kernel gets,
// and logs it; ctx is the request's, lctx the one bounded by a timeout.
func (c *config) errno(ctx, lctx context.Context, what string, id cid.Cid, err error) syscall.Errno {
	switch {
	case ctx.Err() != nil:
		c.log.Debug("fusefs: "+what+" interrupted", "cid", store.CIDText(id), "err", err)
		return syscall.EINTR
	case errors.Is(err, store.ErrNotFound), errors.Is(err, context.DeadlineExceeded), lctx.Err() != nil:
		c.log.Warn("fusefs: "+what+": not found", "cid", store.CIDText(id), "timeout", c.lookupTimeout, "err", err)
		return syscall.ENOENT
	default:
		c.log.Error("fusefs: "+what+" failed", "cid", store.CIDText(id), "err", err)
		return syscall.EIO
	}
}

func (d *dir) fillAttr(a *fuse.Attr) {
	d.cfg.fill(a, d.key.ino(), fuse.S_IFDIR|0o555, d.count)
}

func (d *dir) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fillAttr(&out.Attr)
	return 0
}

// page reads page i, or gives the one read last.
func (d *dir) page(ctx context.Context, i int) ([]dirlist.Entry, error) {
	d.mu.Lock()
	if d.lastPage == i {
		defer d.mu.Unlock()
		return d.last, nil
	}
	d.mu.Unlock()
	entries, err := d.list.Page(ctx, i)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.lastPage, d.last = i, entries
	d.mu.Unlock()
	return entries, nil
}

// Lookup reads the index (in memory) and one page.
func (d *dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if ch := d.GetChild(name); ch != nil {
		if a, ok := ch.Operations().(attrFiller); ok {
			a.fillAttr(&out.Attr)
			return ch, 0
		}
	}
	i := d.list.PageOf(name)
	if i < 0 {
		return nil, syscall.ENOENT
	}
	lctx, cancel := context.WithTimeout(ctx, d.cfg.lookupTimeout)
	defer cancel()
	entries, err := d.page(lctx, i)
	if err != nil {
		return nil, d.cfg.errno(ctx, lctx, "directory lookup", d.cid, err)
	}
	e, ok := dirlist.Find(entries, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	k := d.key.child(name)
	var node interface {
		fs.InodeEmbedder
		attrFiller
	}
	var mode uint32
	switch e.Type {
	case dirlist.File:
		node, mode = &treeFile{cfg: d.cfg, entry: e, key: k}, fuse.S_IFREG
	case dirlist.Symlink:
		node, mode = &symlink{cfg: d.cfg, target: e.Target, key: k}, fuse.S_IFLNK
	default:
		ds, err := d.cfg.src.Open(lctx, e.CID)
		if err == nil && !isDir(ds) {
			err = errors.New("the listing names it a directory, its manifest does not")
		}
		if err != nil {
			return nil, d.cfg.errno(ctx, lctx, "open directory "+name, e.CID, err)
		}
		sub, errno := openDir(ctx, d.cfg, e.CID, k, ds)
		if errno != 0 {
			return nil, errno
		}
		node, mode = sub, fuse.S_IFDIR
	}
	node.fillAttr(&out.Attr)
	return d.NewInode(ctx, node, fs.StableAttr{Mode: mode, Ino: k.ino()}), 0
}

type attrFiller interface{ fillAttr(*fuse.Attr) }

// Readdir streams the listing a page at a time.
func (d *dir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return &dirStream{ctx: context.WithoutCancel(ctx), d: d}, 0
}

// dirStream reads pages as the kernel asks for entries. Its reads are
// bounded by the lookup timeout each, not by the opendir's request.
type dirStream struct {
	ctx     context.Context
	d       *dir
	page    int
	entries []dirlist.Entry
	err     syscall.Errno
}

func (s *dirStream) HasNext() bool {
	for len(s.entries) == 0 && s.err == 0 && s.page < s.d.list.Pages() {
		lctx, cancel := context.WithTimeout(s.ctx, s.d.cfg.lookupTimeout)
		entries, err := s.d.page(lctx, s.page)
		if err != nil {
			s.err = s.d.cfg.errno(s.ctx, lctx, "read directory", s.d.cid, err)
		}
		s.entries = entries
		cancel()
		s.page++
	}
	return len(s.entries) > 0 || s.err != 0
}

func (s *dirStream) Next() (fuse.DirEntry, syscall.Errno) {
	if s.err != 0 {
		err := s.err
		s.err = 0
		s.page = s.d.list.Pages() // nothing after an error
		return fuse.DirEntry{}, err
	}
	e := s.entries[0]
	s.entries = s.entries[1:]
	mode := uint32(fuse.S_IFREG)
	switch e.Type {
	case dirlist.Dir:
		mode = fuse.S_IFDIR
	case dirlist.Symlink:
		mode = fuse.S_IFLNK
	}
	return fuse.DirEntry{Name: e.Name, Mode: mode, Ino: s.d.key.child(e.Name).ino()}, 0
}

func (s *dirStream) Close() {}

func (d *dir) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (d *dir) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (d *dir) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *dir) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *dir) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *dir) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *dir) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }

func (d *dir) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

func (d *dir) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

func (d *dir) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }

func (d *dir) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }
