package fusefs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/meshfs/meshfs/store/dirlist"
)

// treeFile is a file inside a directory dataset. Its attributes come from
// its entry; its dataset is opened when it is first opened (or its
// xattrs read), so that ls -l of a directory fetches no file's manifest.
type treeFile struct {
	fs.Inode
	cfg   *config
	entry dirlist.Entry
	key   key

	mu sync.Mutex
	f  *file // the opened dataset, read as a top-level one
}

var (
	_ = (fs.InodeEmbedder)((*treeFile)(nil))
	_ = (fs.NodeGetattrer)((*treeFile)(nil))
	_ = (fs.NodeOpener)((*treeFile)(nil))
	_ = (fs.NodeReader)((*treeFile)(nil))
	_ = (fs.NodeGetxattrer)((*treeFile)(nil))
	_ = (fs.NodeListxattrer)((*treeFile)(nil))
	_ = (fs.NodeSetattrer)((*treeFile)(nil))
	_ = (fs.NodeWriter)((*treeFile)(nil))
	_ = (fs.NodeSetxattrer)((*treeFile)(nil))
	_ = (fs.NodeRemovexattrer)((*treeFile)(nil))
)

func (t *treeFile) fillAttr(a *fuse.Attr) {
	mode := uint32(fuse.S_IFREG | 0o444)
	if t.entry.Exec {
		mode |= 0o111
	}
	t.cfg.fill(a, t.key.ino(), mode, t.entry.Size)
}

func (t *treeFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	t.fillAttr(&out.Attr)
	return 0
}

// dataset opens the file's dataset once; a failed open is tried again by
// the next caller.
func (t *treeFile) dataset(ctx context.Context) (*file, syscall.Errno) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f != nil {
		return t.f, 0
	}
	lctx, cancel := context.WithTimeout(ctx, t.cfg.lookupTimeout)
	defer cancel()
	ds, err := t.cfg.src.Open(lctx, t.entry.CID)
	if err == nil && ds == nil {
		err = fmt.Errorf("source returned no dataset and no error")
	}
	if err == nil && uint64(ds.Size()) != t.entry.Size {
		err = fmt.Errorf("the listing says %d bytes, the dataset has %d", t.entry.Size, ds.Size())
	}
	if err != nil {
		return nil, t.cfg.errno(ctx, lctx, "open "+t.entry.Name, t.entry.CID, err)
	}
	t.f = newFile(t.cfg, t.entry.CID, ds)
	return t.f, 0
}

func (t *treeFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	if _, errno := t.dataset(ctx); errno != 0 {
		return nil, 0, errno
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (t *treeFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f, errno := t.dataset(ctx)
	if errno != 0 {
		return nil, errno
	}
	return f.Read(ctx, fh, dest, off)
}

func (t *treeFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	// ls -l asks every file for its ACL and security label: those are
	// answered without opening the dataset, which would fetch a manifest
	// per file listed.
	if !strings.HasPrefix(attr, XattrPrefix) {
		return 0, syscall.ENODATA
	}
	f, errno := t.dataset(ctx)
	if errno != 0 {
		return 0, errno
	}
	return f.Getxattr(ctx, attr, dest)
}

func (t *treeFile) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	f, errno := t.dataset(ctx)
	if errno != 0 {
		return 0, errno
	}
	return f.Listxattr(ctx, dest)
}

func (t *treeFile) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (t *treeFile) Write(context.Context, fs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (t *treeFile) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}

func (t *treeFile) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }

// symlink is a symbolic link inside a directory dataset. Its target is a
// value only: the kernel resolves it as it resolves any link, relative to
// the link's directory, so a target that climbs out of the tree or is
// absolute leads outside the mount, as it would in a copy of the tree.
type symlink struct {
	fs.Inode
	cfg    *config
	target string
	key    key
}

var (
	_ = (fs.NodeReadlinker)((*symlink)(nil))
	_ = (fs.NodeGetattrer)((*symlink)(nil))
	_ = (fs.NodeSetattrer)((*symlink)(nil))
)

func (l *symlink) fillAttr(a *fuse.Attr) {
	l.cfg.fill(a, l.key.ino(), fuse.S_IFLNK|0o777, uint64(len(l.target)))
}

func (l *symlink) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	l.fillAttr(&out.Attr)
	return 0
}

func (l *symlink) Readlink(context.Context) ([]byte, syscall.Errno) { return []byte(l.target), 0 }

func (l *symlink) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
